package envoyconfig

import (
	"errors"
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// The typed configs a bootstrap may hold resolve only once their packages have registered
	// their message types. These are the ones the generator uses, plus the access loggers an
	// operator is most likely to add.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// MarshalYAML renders a bootstrap as Envoy reads it: the protobuf JSON mapping with the
// proto field names of Envoy's documentation, as YAML. The output is deterministic (keys are
// sorted), so a generated file can be compared byte for byte.
func MarshalYAML(b *bootstrapv3.Bootstrap) ([]byte, error) {
	j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	return y, nil
}

// ParseYAML reads an Envoy bootstrap in YAML (or JSON), typed configs included. Unknown
// fields are errors, as they are to Envoy. It does not validate: see Validate.
func ParseYAML(data []byte) (*bootstrapv3.Bootstrap, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(j, b); err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	return b, nil
}

// validator is what the protoc-gen-validate code generated for every Envoy message provides.
type validator interface{ ValidateAll() error }

// Validate checks a bootstrap against the constraints of Envoy's API, including the messages
// packed in its typed configs, which the bootstrap's own ValidateAll does not look into. A
// typed config of a type this package does not know is an error, since it cannot be checked.
func Validate(b *bootstrapv3.Bootstrap) error {
	if err := b.ValidateAll(); err != nil {
		return err
	}
	return protorange.Range(b.ProtoReflect(), func(p protopath.Values) error {
		last := p.Index(-1)
		m, ok := last.Value.Interface().(protoreflect.Message)
		if !ok {
			return nil
		}
		if last.Step.Kind() == protopath.AnyExpandStep {
			v, ok := m.Interface().(validator)
			if !ok {
				return nil
			}
			if err := v.ValidateAll(); err != nil {
				return fmt.Errorf("%s: %w", p.Path, err)
			}
			return nil
		}
		if a, ok := m.Interface().(*anypb.Any); ok {
			// protorange silently leaves an Any it cannot resolve unexpanded.
			if _, err := protoregistry.GlobalTypes.FindMessageByURL(a.GetTypeUrl()); err != nil {
				if errors.Is(err, protoregistry.NotFound) {
					return fmt.Errorf("%s: typed config %s is not a type this checker knows", p.Path, a.GetTypeUrl())
				}
				return fmt.Errorf("%s: %w", p.Path, err)
			}
		}
		return nil
	})
}

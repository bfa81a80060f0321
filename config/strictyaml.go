package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FieldError is one problem in a file, at a path such as "services[1].match.pathPrefix".
type FieldError struct {
	Path    string
	Line    int
	Message string
}

func (e FieldError) Error() string {
	s := e.Message
	if e.Path != "" {
		s = e.Path + ": " + s
	}
	if e.Line > 0 {
		s += " (line " + strconv.Itoa(e.Line) + ")"
	}
	return s
}

// Errors is every problem found in one file. Its message lists them one per line.
type Errors struct {
	File string
	List []FieldError
}

func (e *Errors) Error() string {
	var b strings.Builder
	if e.File != "" {
		fmt.Fprintf(&b, "%s: %d error(s):", e.File, len(e.List))
	} else {
		fmt.Fprintf(&b, "%d error(s):", len(e.List))
	}
	for _, fe := range e.List {
		b.WriteString("\n  ")
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Add records a problem at path.
func (e *Errors) Add(path string, line int, format string, args ...any) {
	e.List = append(e.List, FieldError{Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

// Err returns e when it holds problems and nil otherwise, sorted by line so that a user reads
// them in file order.
func (e *Errors) Err() error {
	if len(e.List) == 0 {
		return nil
	}
	sort.SliceStable(e.List, func(i, j int) bool { return e.List[i].Line < e.List[j].Line })
	return e
}

// DecodeStrict decodes YAML into out, which must be a pointer to a struct whose fields carry
// yaml tags. Unlike yaml.Unmarshal it rejects unknown and repeated fields and keeps going after
// an error, naming each by its path, so one run of the loader shows every mistake in the file.
// It returns the line of every field it set, by path, for the semantic checks that follow, or
// nil when the data is not YAML at all: checks of an undecoded file would only add noise.
func DecodeStrict(data []byte, out any, errs *Errors) Lines {
	lines := Lines{}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		errs.Add("", 0, "not valid YAML: %v", err)
		return nil // nil tells the caller there is nothing to check further
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return lines // an empty file is an empty document
	}
	// Every node of the document is visited once, except through aliases. The budget lets
	// aliases repeat the document sixteen times over and no more: nested aliases would
	// otherwise expand a small file into billions of values.
	d := decoder{errs: errs, lines: lines, budget: 16*len(data) + 1024}
	d.decode(root.Content[0], reflect.ValueOf(out).Elem(), "")
	return lines
}

// Lines maps a field path to the line it was read from.
type Lines map[string]int

// At returns the line of path, or of its nearest parent that has one.
func (l Lines) At(path string) int {
	for path != "" {
		if n, ok := l[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

type decoder struct {
	errs   *Errors
	lines  Lines
	budget int
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return strconv.Quote(n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.budget--
	if d.budget < 0 {
		if d.budget == -1 {
			d.errs.Add(path, n.Line, "aliases expand the document to more than 16 times its size; decoding stopped here")
		}
		return
	}
	d.lines[path] = n.Line
	if n.Kind == yaml.AliasNode {
		d.decode(n.Alias, v, path)
		return
	}
	// An explicit null leaves the zero value, which the checks treat as "not set".
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		// The pointer is set only when its value decodes: a value that does not reads as
		// "not set", so that the checks that follow do not report its zero value as well.
		before := len(d.errs.List)
		elem := reflect.New(v.Type().Elem())
		d.decode(n, elem.Elem(), path)
		if len(d.errs.List) == before && d.budget >= 0 {
			v.Set(elem)
		}
	case reflect.Struct:
		if _, isScalar := v.Addr().Interface().(yaml.Unmarshaler); isScalar {
			d.scalar(n, v, path)
			return
		}
		d.mapping(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errs.Add(path, n.Line, "want a list, found %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if d.budget < 0 {
				s = s.Slice(0, i) // keep no empty items for the checks to report
				break
			}
			d.decode(item, s.Index(i), path+"["+strconv.Itoa(i)+"]")
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.errs.Add(path, n.Line, "want a mapping, found %s", kindName(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key := reflect.New(v.Type().Key()).Elem()
			if err := k.Decode(key.Addr().Interface()); err != nil {
				d.errs.Add(path, k.Line, "key %s: %s", kindName(k), cleanYAMLError(err))
				continue
			}
			if m.MapIndex(key).IsValid() {
				d.errs.Add(join(path, k.Value), k.Line, "appears more than once")
				continue
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, elem, join(path, k.Value))
			m.SetMapIndex(key, elem)
		}
		v.Set(m)
	default:
		d.scalar(n, v, path)
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errs.Add(path, n.Line, "want a mapping, found %s", kindName(n))
		return
	}
	t := v.Type()
	fields := make(map[string]int, t.NumField())
	var names []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		fp := join(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			d.errs.Add(fp, k.Line, "unknown field; known fields here: %s", strings.Join(names, ", "))
			continue
		}
		if seen[k.Value] {
			d.errs.Add(fp, k.Line, "appears more than once")
			continue
		}
		seen[k.Value] = true
		d.decode(val, v.Field(idx), fp)
	}
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errs.Add(path, n.Line, "want a single value, found %s", kindName(n))
		return
	}
	// The yaml library truncates a float into an integer field (0.5 reads as 0).
	if n.Tag == "!!float" && v.CanInt() && v.Type() != durationType {
		d.errs.Add(path, n.Line, "want a whole number, found %s", kindName(n))
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.errs.Add(path, n.Line, "%s", cleanYAMLError(err))
	}
}

var durationType = reflect.TypeFor[time.Duration]()

// cleanYAMLError strips the yaml library's prefixes ("yaml: unmarshal errors:\n  line 3: ")
// because the path and line are reported by the caller.
func cleanYAMLError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.TrimSpace(msg)
	if strings.HasPrefix(msg, "line ") {
		if i := strings.Index(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	return msg
}

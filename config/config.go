package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/partroute/partroute/contract"
	"github.com/partroute/partroute/keying"
)

// ReadPolicy says which replicas may serve a service's reads.
type ReadPolicy uint8

// The read policies.
const (
	// ReadPrimary sends reads to the primary, like writes: the strongest consistency.
	ReadPrimary ReadPolicy = iota + 1
	// ReadSecondary prefers healthy secondaries and falls back to the primary when none is.
	ReadSecondary
	// ReadAny lets Envoy pick any replica of the partition.
	ReadAny
)

// String returns the policy's configuration name.
func (p ReadPolicy) String() string {
	switch p {
	case ReadPrimary:
		return "primary"
	case ReadSecondary:
		return "secondary"
	case ReadAny:
		return "any"
	}
	return "unknown"
}

// Selection is how Envoy picks a replica within the partition and role partroute chose.
type Selection uint8

// The selections.
const (
	// SelectSubset lets Envoy's subset load balancer pick among the partition's replicas of
	// the role, and a retry pick again among the same ones: the default.
	SelectSubset Selection = iota
	// SelectOrdered sends, with each answer, the ordered list of the replicas that may serve
	// the request, which Envoy's override_host policy walks: the first for the request, the
	// next for each retry, the partition's subset once the list is spent.
	SelectOrdered
)

// String returns the selection's configuration name.
func (s Selection) String() string {
	if s == SelectOrdered {
		return "ordered"
	}
	return "subset"
}

// Defaults of the settings that may be left out.
const (
	DefaultExtProcAddr    = "127.0.0.1:50051"
	DefaultAdminAddr      = "127.0.0.1:9901"
	DefaultCacheSize      = 100000
	DefaultCacheTTL       = 30 * time.Second
	DefaultStaleIfError   = 5 * time.Minute
	DefaultResolveTimeout = 100 * time.Millisecond
	DefaultMaxBodyBytes   = 1 << 20
)

// MaxBodyBytesLimit is the largest maxBodyBytes partroute accepts. The ext_proc server's gRPC
// receive limit is set from it once, at start, so that a reload may raise maxBodyBytes up to
// it without a restart; a larger value would need a larger limit, which a running server
// cannot take.
const MaxBodyBytesLimit = 64 << 20

// Config is a loaded, validated partroute.yaml. It is immutable.
type Config struct {
	// Path is the file the configuration was read from; relative paths in it are resolved
	// against its directory.
	Path      string
	Listen    Listen
	Naming    Naming
	Cache     Cache
	Headers   Headers
	Unmatched Unmatched
	// MaxBodyBytes bounds the request body buffered for services that key on it.
	MaxBodyBytes int
	// Limits bound what a client can make partroute hold.
	Limits Limits
	// ReadYourWrites holds the keys and carriers of read-your-writes tokens.
	ReadYourWrites ReadYourWrites
	// Services in configuration order.
	Services []*Service
	// byPrecedence holds the services most specific match first.
	byPrecedence []*Service
}

// Listen holds the listen addresses and their TLS settings. An empty XDS address turns the
// xDS server off.
type Listen struct {
	ExtProc, XDS, Admin string
	TLS                 ListenTLS
}

// Naming says where the naming view comes from.
type Naming struct {
	// Source is SourceFile, SourceEtcd or SourceServiceFabric.
	Source string
	// File is the absolute path of the naming file for the file source.
	File          string
	Etcd          Etcd
	ServiceFabric ServiceFabric
}

// Cache holds the resolution cache settings.
type Cache struct {
	Size           int
	TTL            time.Duration
	StaleIfError   time.Duration
	ResolveTimeout time.Duration
}

// Headers holds the names of the headers partroute sets on the upstream request and reads
// from the client.
type Headers struct {
	Partition, Role, Key string
	// Consistency is the request header by which a client asks for a strong (primary) read.
	Consistency string
	// SetBy says who sets the partition, role and key headers on the upstream request: the
	// shape of partroute's answer to Envoy.
	SetBy SetBy
}

// SetBy says who sets partroute's headers on the upstream request, which is the shape of
// partroute's answer (docs/envoy.md has the measured cost of each). In every shape the
// client's own copies of the headers are removed, so that a client never chooses its
// partition or role.
type SetBy uint8

// The shapes of partroute's answer.
const (
	// SetByExtProc has partroute send the headers in its ext_proc answer, as a header
	// mutation that also removes the client's copies, beside the envoy.lb metadata.
	SetByExtProc SetBy = iota + 1
	// SetByEnvoy has partroute send metadata only (envoy.lb, and the headers' values in
	// contract.RequestNamespace); the generated routes remove the client's copies and set the
	// headers from that metadata.
	SetByEnvoy
	// SetByNone has partroute send the envoy.lb metadata only; the generated routes remove the
	// client's copies, and the upstream request carries no partroute header.
	SetByNone
)

// DefaultSetBy is the shape of a configuration that names none: the one that is correct behind
// any route, since partroute removes the client's copies itself. The others cost Envoy no more
// than 2–3% less (docs/benchmarks.md, "The answer's shape").
const DefaultSetBy = SetByExtProc

// String is the shape's name in the configuration.
func (s SetBy) String() string {
	switch s {
	case SetByExtProc:
		return "extproc"
	case SetByEnvoy:
		return "envoy"
	case SetByNone:
		return "none"
	}
	return "SetBy(" + strconv.Itoa(int(s)) + ")"
}

// OrDefault is s, or DefaultSetBy for the zero SetBy of a Headers built in code rather than
// parsed, so that readers of the shape agree with the loader on what an unset one means.
func (s SetBy) OrDefault() SetBy {
	if s == 0 {
		return DefaultSetBy
	}
	return s
}

// ParseSetBy reads a shape by its name in the configuration (extproc, envoy or none; empty
// is DefaultSetBy), for the flags that choose one, as partroute loadtest's -set-by does.
func ParseSetBy(v string) (SetBy, error) {
	s, ok := parseSetBy(v)
	if !ok {
		return 0, fmt.Errorf("%q is not extproc, envoy or none", v)
	}
	return s, nil
}

// parseSetBy reads headers.setBy; empty is the default.
func parseSetBy(v string) (SetBy, bool) {
	switch v {
	case "":
		return DefaultSetBy, true
	case "extproc":
		return SetByExtProc, true
	case "envoy":
		return SetByEnvoy, true
	case "none":
		return SetByNone, true
	}
	return 0, false
}

// Unmatched says what happens to a request that no service matches.
type Unmatched uint8

// The behaviours for unmatched requests.
const (
	// PassThrough lets the request continue untouched.
	PassThrough Unmatched = iota + 1
	// Reject answers 404 no_service.
	Reject
)

// Service is one partitioned service.
type Service struct {
	Name string
	// Index is the service's position in the configuration.
	Index int
	Match Match
	Keyer *keying.Keyer
	Reads ReadPolicy
	// ReadMethods are the upper-case methods that count as reads.
	ReadMethods []string
	// FailoverWait is how long a request that needs the primary may be held while the
	// partition has none, waiting for a new one; 0 (the default) answers 503 at once.
	FailoverWait time.Duration
	// Selection is how Envoy picks among the replicas partroute allows (replicas.selection).
	Selection Selection
	// ReadYourWrites is how long after a write its client's reads of the same partition go to
	// the primary; 0 (the default) is off.
	ReadYourWrites time.Duration
	// Upstream is how Envoy talks to the replicas.
	Upstream Upstream
	// Fabric maps the service to Service Fabric, for the servicefabric naming source.
	Fabric Fabric
}

// Scheme returns the service's partition scheme.
func (s *Service) Scheme() *keying.Scheme { return s.Keyer.Scheme() }

// IsRead reports whether method counts as a read for this service.
func (s *Service) IsRead(method string) bool {
	for _, m := range s.ReadMethods {
		if m == method {
			return true
		}
	}
	return false
}

// Match selects a service's requests by authority and path prefix. Both are optional; an empty
// one matches every request.
type Match struct {
	// Authority is an exact host name or "*.suffix".
	Authority  string
	PathPrefix string
}

// Load reads and validates a configuration file. The configuration keeps the file's absolute
// path, against which naming.file is resolved; its errors name the file as path does, as the
// user wrote it.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data, abs)
	var errs *Errors
	if errors.As(err, &errs) {
		errs.File = path
	}
	return c, err
}

// file is the YAML shape of partroute.yaml.
type file struct {
	Listen struct {
		ExtProc string        `yaml:"extproc"`
		XDS     string        `yaml:"xds"`
		Admin   string        `yaml:"admin"`
		TLS     listenTLSFile `yaml:"tls"`
	} `yaml:"listen"`
	Naming namingFile `yaml:"naming"`
	Cache  struct {
		Size           *int           `yaml:"size"`
		TTL            *time.Duration `yaml:"ttl"`
		StaleIfError   *time.Duration `yaml:"staleIfError"`
		ResolveTimeout *time.Duration `yaml:"resolveTimeout"`
	} `yaml:"cache"`
	Headers struct {
		Partition   string `yaml:"partition"`
		Role        string `yaml:"role"`
		Key         string `yaml:"key"`
		Consistency string `yaml:"consistency"`
		SetBy       string `yaml:"setBy"`
	} `yaml:"headers"`
	Unmatched    string        `yaml:"unmatched"`
	MaxBodyBytes *int          `yaml:"maxBodyBytes"`
	Limits       limitsFile    `yaml:"limits"`
	Services     []serviceFile `yaml:"services"`
	// ReadYourWrites is a pointer so that an empty section is told from none.
	ReadYourWrites *readYourWritesFile `yaml:"readYourWrites"`
}

type serviceFile struct {
	Name  string `yaml:"name"`
	Match struct {
		Authority  string `yaml:"authority"`
		PathPrefix string `yaml:"pathPrefix"`
	} `yaml:"match"`
	Partitioning struct {
		Scheme  string   `yaml:"scheme"`
		LowKey  *int64   `yaml:"lowKey"`
		HighKey *int64   `yaml:"highKey"`
		Count   *int     `yaml:"count"`
		Names   []string `yaml:"names"`
	} `yaml:"partitioning"`
	Key struct {
		Sources   []sourceFile `yaml:"sources"`
		Transform string       `yaml:"transform"`
		Hash      string       `yaml:"hash"`
	} `yaml:"key"`
	Replicas struct {
		Reads          string         `yaml:"reads"`
		ReadMethods    []string       `yaml:"readMethods"`
		FailoverWait   *time.Duration `yaml:"failoverWait"`
		ReadYourWrites *time.Duration `yaml:"readYourWrites"`
		Selection      string         `yaml:"selection"`
	} `yaml:"replicas"`
	Upstream upstreamFile `yaml:"upstream"`
	Fabric   fabricFile   `yaml:"fabric"`
}

type sourceFile struct {
	Path     string `yaml:"path"`
	Header   string `yaml:"header"`
	Query    string `yaml:"query"`
	Cookie   string `yaml:"cookie"`
	JSONBody string `yaml:"jsonBody"`
}

// Parse validates configuration data read from path (used to resolve relative paths and in
// messages).
func Parse(data []byte, path string) (*Config, error) {
	errs := &Errors{File: path}
	var f file
	lines := DecodeStrict(data, &f, errs)
	if lines == nil {
		return nil, errs.Err()
	}
	at := func(p string) int { return lines.At(p) }
	c := &Config{Path: path}

	c.Listen = Listen{ExtProc: f.Listen.ExtProc, XDS: f.Listen.XDS, Admin: f.Listen.Admin}
	if c.Listen.ExtProc == "" {
		c.Listen.ExtProc = DefaultExtProcAddr
	}
	if c.Listen.Admin == "" {
		c.Listen.Admin = DefaultAdminAddr
	}
	for _, l := range []struct{ field, addr string }{{"listen.extproc", c.Listen.ExtProc}, {"listen.xds", c.Listen.XDS}, {"listen.admin", c.Listen.Admin}} {
		if l.addr == "" {
			continue
		}
		if _, ok := UnixSocketPath(l.addr); ok {
			if l.field != "listen.extproc" {
				errs.Add(l.field, at(l.field), "%q: a unix socket is for listen.extproc only, where a colocated Envoy calls partroute for every request", l.addr)
			} else if err := checkUnixSocket(l.addr); err != nil {
				errs.Add(l.field, at(l.field), "%v", err)
			}
			continue
		}
		if err := checkHostPort(l.addr); err != nil {
			errs.Add(l.field, at(l.field), "%v", err)
		}
	}

	c.Listen.TLS = parseListenTLS(&f.Listen.TLS, c.Listen, path, errs, at)

	c.Naming = parseNaming(&f.Naming, path, errs, at)

	c.Cache = Cache{Size: DefaultCacheSize, TTL: DefaultCacheTTL, StaleIfError: DefaultStaleIfError, ResolveTimeout: DefaultResolveTimeout}
	if f.Cache.Size != nil {
		c.Cache.Size = *f.Cache.Size
		if c.Cache.Size < 1 {
			errs.Add("cache.size", at("cache.size"), "%d is below 1", c.Cache.Size)
		}
	}
	checkDuration := func(field string, v *time.Duration, dst *time.Duration, allowZero bool) {
		if v == nil {
			return
		}
		*dst = *v
		if *v < 0 || (*v == 0 && !allowZero) {
			errs.Add(field, at(field), "%v must be above 0", *v)
		}
	}
	checkDuration("cache.ttl", f.Cache.TTL, &c.Cache.TTL, false)
	checkDuration("cache.staleIfError", f.Cache.StaleIfError, &c.Cache.StaleIfError, true)
	checkDuration("cache.resolveTimeout", f.Cache.ResolveTimeout, &c.Cache.ResolveTimeout, false)
	if c.Cache.ResolveTimeout >= contract.DefaultMessageTimeout {
		errs.Add("cache.resolveTimeout", at("cache.resolveTimeout"), "%v must stay below Envoy's ext_proc message_timeout (%v by default) so that partroute answers 503 before Envoy times out", c.Cache.ResolveTimeout, contract.DefaultMessageTimeout)
	}

	c.Headers = DefaultHeaders()
	seenHeader := map[string]string{}
	for _, h := range []struct {
		field string
		val   string
		dst   *string
	}{
		{"headers.partition", f.Headers.Partition, &c.Headers.Partition},
		{"headers.role", f.Headers.Role, &c.Headers.Role},
		{"headers.key", f.Headers.Key, &c.Headers.Key},
		{"headers.consistency", f.Headers.Consistency, &c.Headers.Consistency},
	} {
		if h.val != "" {
			*h.dst = strings.ToLower(h.val)
			if err := checkSettableHeader(*h.dst); err != nil {
				errs.Add(h.field, at(h.field), "%v", err)
			}
		}
		if other, dup := seenHeader[*h.dst]; dup {
			errs.Add(h.field, at(h.field), "%q is already the name of %s", *h.dst, other)
		}
		seenHeader[*h.dst] = h.field
	}

	if setBy, ok := parseSetBy(f.Headers.SetBy); ok {
		c.Headers.SetBy = setBy
	} else {
		errs.Add("headers.setBy", at("headers.setBy"), "%q is not extproc, envoy or none", f.Headers.SetBy)
	}

	c.ReadYourWrites = parseReadYourWrites(f.ReadYourWrites, path, seenHeader, errs, at)

	switch f.Unmatched {
	case "", "passthrough":
		c.Unmatched = PassThrough
	case "reject":
		c.Unmatched = Reject
	default:
		errs.Add("unmatched", at("unmatched"), "%q is not passthrough or reject", f.Unmatched)
	}

	c.MaxBodyBytes = DefaultMaxBodyBytes
	if f.MaxBodyBytes != nil {
		c.MaxBodyBytes = *f.MaxBodyBytes
		switch {
		case c.MaxBodyBytes < 1:
			errs.Add("maxBodyBytes", at("maxBodyBytes"), "%d is below 1", c.MaxBodyBytes)
		case c.MaxBodyBytes > MaxBodyBytesLimit:
			errs.Add("maxBodyBytes", at("maxBodyBytes"), "%d is above the maximum of %d (64 MiB)", c.MaxBodyBytes, MaxBodyBytesLimit)
		}
	}

	c.Limits = parseLimits(&f.Limits, errs, at)

	names := map[string]int{}
	for i := range f.Services {
		p := "services[" + strconv.Itoa(i) + "]"
		s := parseService(&f.Services[i], i, p, errs, at)
		if s == nil {
			continue
		}
		if j, dup := names[s.Name]; dup {
			errs.Add(p+".name", at(p+".name"), "%q is already the name of services[%d]", s.Name, j)
			continue
		}
		names[s.Name] = i
		c.Services = append(c.Services, s)
	}
	if c.Naming.Source == SourceServiceFabric {
		for _, s := range c.Services {
			if s.Fabric.Name == "" {
				p := "services[" + strconv.Itoa(s.Index) + "].fabric.name"
				errs.Add(p, at("services["+strconv.Itoa(s.Index)+"]"), "the servicefabric naming source needs each service's Service Fabric name, such as fabric:/app/%s", s.Name)
			}
		}
	}
	for _, s := range c.Services {
		if s.ReadYourWrites > 0 && f.ReadYourWrites == nil {
			p := "services[" + strconv.Itoa(s.Index) + "].replicas.readYourWrites"
			errs.Add(p, at(p), "needs the readYourWrites section and its keysFile, the keys that sign and verify the tokens")
		}
	}
	for _, s := range c.Services {
		// The stream of a held request sends partroute no message while it waits: the idle
		// timeout would end it first.
		if s.FailoverWait > 0 && s.FailoverWait >= c.Limits.ExtProc.StreamIdleTimeout {
			p := "services[" + strconv.Itoa(s.Index) + "].replicas.failoverWait"
			errs.Add(p, at(p), "%v must stay below limits.extproc.streamIdleTimeout (%v), which would end a held request's stream first", s.FailoverWait, c.Limits.ExtProc.StreamIdleTimeout)
		}
	}
	c.byPrecedence = append([]*Service(nil), c.Services...)
	sort.SliceStable(c.byPrecedence, func(i, j int) bool { return morePrecise(c.byPrecedence[i].Match, c.byPrecedence[j].Match) })
	// Services of equal precedence need not sit next to each other in byPrecedence, so
	// identical matches are found by value.
	firstWith := map[Match]*Service{}
	for _, b := range c.Services {
		if a, dup := firstWith[b.Match]; dup {
			p := "services[" + strconv.Itoa(b.Index) + "].match"
			errs.Add(p, at(p), "matches exactly the same requests as services[%d] (%s)", a.Index, a.Name)
			continue
		}
		firstWith[b.Match] = b
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

func parseService(f *serviceFile, index int, p string, errs *Errors, at func(string) int) *Service {
	before := len(errs.List)
	s := &Service{Name: f.Name, Index: index}
	if s.Name == "" {
		errs.Add(p+".name", at(p), "every service needs a name")
	} else if !validName(s.Name) {
		errs.Add(p+".name", at(p+".name"), "%q may hold only letters, digits, '.', '_' and '-', and starts with a letter or digit", s.Name)
	}

	s.Match = Match{Authority: strings.ToLower(f.Match.Authority), PathPrefix: f.Match.PathPrefix}
	if a := s.Match.Authority; a != "" {
		host := strings.TrimPrefix(a, "*.")
		if host == "" || strings.ContainsAny(host, "*:/ ") {
			errs.Add(p+".match.authority", at(p+".match.authority"), "%q is not a host name or *.suffix (ports are ignored when matching, so leave them out)", f.Match.Authority)
		}
	}
	if pp := s.Match.PathPrefix; pp != "" && (pp[0] != '/' || strings.ContainsAny(pp, "?# ")) {
		errs.Add(p+".match.pathPrefix", at(p+".match.pathPrefix"), "%q must start with / and hold no ?, # or space", pp)
	}

	pf := p + ".partitioning"
	var scheme *keying.Scheme
	kind, ok := keying.ParseSchemeKind(f.Partitioning.Scheme)
	if !ok {
		if f.Partitioning.Scheme == "" {
			errs.Add(pf+".scheme", at(pf), "is required: uniformInt64, named or singleton")
		} else {
			errs.Add(pf+".scheme", at(pf+".scheme"), "%q is not uniformInt64, named or singleton", f.Partitioning.Scheme)
		}
	} else {
		var err error
		part := f.Partitioning
		unused := func(field string, set bool) {
			if set {
				errs.Add(pf+"."+field, at(pf+"."+field), "does not apply to a %s scheme", kind)
			}
		}
		switch kind {
		case keying.Singleton:
			unused("lowKey", part.LowKey != nil)
			unused("highKey", part.HighKey != nil)
			unused("names", part.Names != nil)
			if part.Count != nil && *part.Count != 1 {
				errs.Add(pf+".count", at(pf+".count"), "a singleton scheme has exactly 1 partition, not %d", *part.Count)
			}
			scheme = keying.NewSingleton()
		case keying.UniformInt64:
			unused("names", part.Names != nil)
			for _, req := range []struct {
				field string
				set   bool
			}{{"lowKey", part.LowKey != nil}, {"highKey", part.HighKey != nil}, {"count", part.Count != nil}} {
				if !req.set && !hasError(errs, pf+"."+req.field) {
					errs.Add(pf+"."+req.field, at(pf), "is required for a uniformInt64 scheme")
				}
			}
			if part.LowKey != nil && part.HighKey != nil && part.Count != nil {
				scheme, err = keying.NewUniformInt64(*part.LowKey, *part.HighKey, *part.Count)
			}
		case keying.Named:
			unused("lowKey", part.LowKey != nil)
			unused("highKey", part.HighKey != nil)
			if part.Count != nil && *part.Count != len(part.Names) {
				errs.Add(pf+".count", at(pf+".count"), "%d differs from the number of names, %d", *part.Count, len(part.Names))
			}
			scheme, err = keying.NewNamed(part.Names)
		}
		if fe, ok := errors.AsType[*keying.FieldError](err); ok {
			errs.Add(pf+"."+fe.Field, at(pf+"."+fe.Field), "%s", fe.Message)
		}
	}

	kf := p + ".key"
	var sources []keying.Source
	for i, sf := range f.Key.Sources {
		sp := kf + ".sources[" + strconv.Itoa(i) + "]"
		var set []struct {
			kind keying.SourceKind
			arg  string
		}
		for _, c := range []struct {
			kind keying.SourceKind
			arg  string
		}{{keying.SourcePath, sf.Path}, {keying.SourceHeader, sf.Header}, {keying.SourceQuery, sf.Query}, {keying.SourceCookie, sf.Cookie}, {keying.SourceJSONBody, sf.JSONBody}} {
			if c.arg != "" {
				set = append(set, c)
			}
		}
		if len(set) != 1 {
			errs.Add(sp, at(sp), "a key source names exactly one of path, header, query, cookie or jsonBody, found %d", len(set))
			continue
		}
		src, err := keying.NewSource(set[0].kind, set[0].arg)
		if err != nil {
			errs.Add(sp+"."+set[0].kind.String(), at(sp+"."+set[0].kind.String()), "%v", err)
			continue
		}
		sources = append(sources, src)
	}
	var transform keying.Transform
	if f.Key.Transform != "" {
		if transform, ok = keying.ParseTransform(f.Key.Transform); !ok {
			errs.Add(kf+".transform", at(kf+".transform"), "%q is not int64, hash or name", f.Key.Transform)
		}
	}
	var hash keying.HashFunc
	if f.Key.Hash != "" {
		if hash, ok = keying.ParseHashFunc(f.Key.Hash); !ok {
			errs.Add(kf+".hash", at(kf+".hash"), "%q is not xxhash64 or fnv1a64", f.Key.Hash)
		}
	}
	if scheme != nil && len(sources) == len(f.Key.Sources) {
		k, err := keying.NewKeyer(scheme, sources, transform, hash)
		if fe, ok := errors.AsType[*keying.FieldError](err); ok {
			field := strings.TrimPrefix(fe.Field, "key.")
			errs.Add(kf+"."+field, at(kf+"."+field), "%s", fe.Message)
		}
		s.Keyer = k
	}

	rf := p + ".replicas"
	switch f.Replicas.Reads {
	case "", "primary":
		s.Reads = ReadPrimary
	case "secondary":
		s.Reads = ReadSecondary
	case "any":
		s.Reads = ReadAny
	default:
		errs.Add(rf+".reads", at(rf+".reads"), "%q is not primary, secondary or any", f.Replicas.Reads)
	}
	s.ReadMethods = []string{"GET", "HEAD", "OPTIONS"}
	if f.Replicas.ReadMethods != nil {
		s.ReadMethods = nil
		for i, m := range f.Replicas.ReadMethods {
			m = strings.ToUpper(m)
			if !validMethod(m) {
				mp := rf + ".readMethods[" + strconv.Itoa(i) + "]"
				errs.Add(mp, at(mp), "%q is not an HTTP method", f.Replicas.ReadMethods[i])
				continue
			}
			s.ReadMethods = append(s.ReadMethods, m)
		}
	}
	if w := f.Replicas.FailoverWait; w != nil {
		s.FailoverWait = *w
		switch {
		case *w < 0:
			errs.Add(rf+".failoverWait", at(rf+".failoverWait"), "%v is negative; 0 turns the wait off", *w)
		case *w > MaxFailoverWait:
			errs.Add(rf+".failoverWait", at(rf+".failoverWait"), "%v is above the maximum of %v: a client waiting longer for one write is better told to retry", *w, MaxFailoverWait)
		}
	}
	switch f.Replicas.Selection {
	case "", "subset":
		s.Selection = SelectSubset
	case "ordered":
		s.Selection = SelectOrdered
	default:
		errs.Add(rf+".selection", at(rf+".selection"), "%q is not subset or ordered", f.Replicas.Selection)
	}
	s.ReadYourWrites = parseReadYourWritesWindow(f.Replicas.ReadYourWrites, s.Reads, rf, errs, at)
	s.Upstream = parseUpstream(&f.Upstream, p, errs, at)
	s.Fabric = parseFabric(&f.Fabric, p, errs, at)
	if len(errs.List) > before {
		return nil
	}
	return s
}

// MaxFailoverWait is the largest services[].replicas.failoverWait. Service Fabric's own
// reconfigurations take hundreds of milliseconds to a second or two; ten seconds leaves room
// for a slow one without holding clients beyond what they would wait for any answer.
const MaxFailoverWait = 10 * time.Second

// LongestFailoverWait is the largest failoverWait of the configuration's services, 0 when no
// service holds requests. Envoy's ext_proc filter must allow a message timeout that long
// (plus contract.FailoverAnswerMargin) for the wait to reach its end.
func (c *Config) LongestFailoverWait() time.Duration {
	var longest time.Duration
	for _, s := range c.Services {
		longest = max(longest, s.FailoverWait)
	}
	return longest
}

// DefaultHeaders are the header names of a configuration that sets none.
func DefaultHeaders() Headers {
	return Headers{Partition: "x-partition-id", Role: "x-partition-role", Key: "x-partition-key", Consistency: "x-partroute-consistency", SetBy: DefaultSetBy}
}

// OrdersReplicas reports whether a service has replicas.selection: ordered, whose answers
// carry the host list that Envoy's ext_proc filter must then accept.
func (c *Config) OrdersReplicas() bool {
	for _, s := range c.Services {
		if s.Selection == SelectOrdered {
			return true
		}
	}
	return false
}

// Service returns the service of the given name.
func (c *Config) Service(name string) *Service {
	for _, s := range c.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// ServicesByPrecedence returns the services in the order Match tries them, most specific first.
// Generated Envoy routes follow the same order, so Envoy and partroute agree on every request.
func (c *Config) ServicesByPrecedence() []*Service { return c.byPrecedence }

// Match returns the service a request belongs to, or nil. Precedence, most specific first: an
// exact authority, then a wildcard authority (longer suffix first), then none; within each, the
// longer path prefix. It does not allocate.
func (c *Config) Match(authority, path string) *Service {
	host := hostOf(authority)
	for _, s := range c.byPrecedence {
		if s.Match.matchesHost(host) && s.Match.matchesPath(path) {
			return s
		}
	}
	return nil
}

// hostOf strips a port from an authority, keeping IPv6 literals whole.
func hostOf(authority string) string {
	if authority == "" {
		return ""
	}
	if authority[0] == '[' {
		if i := strings.IndexByte(authority, ']'); i >= 0 {
			return authority[:i+1]
		}
		return authority
	}
	if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		return authority[:i]
	}
	return authority
}

func (m Match) matchesHost(host string) bool {
	switch {
	case m.Authority == "":
		return true
	case strings.HasPrefix(m.Authority, "*."):
		suffix := m.Authority[1:] // ".example.com"
		return len(host) > len(suffix) && strings.EqualFold(host[len(host)-len(suffix):], suffix)
	default:
		return strings.EqualFold(host, m.Authority)
	}
}

// matchesPath matches whole segments: "/api/users" matches "/api/users", "/api/users/42" and
// "/api/users?x", never "/api/usersX". A prefix that ends in "/" matches as plain text.
func (m Match) matchesPath(path string) bool {
	pp := m.PathPrefix
	if pp == "" {
		return true
	}
	if !strings.HasPrefix(path, pp) {
		return false
	}
	if len(path) == len(pp) || pp[len(pp)-1] == '/' {
		return true
	}
	switch path[len(pp)] {
	case '/', '?', '#':
		return true
	}
	return false
}

// authorityRank orders authorities from most to least specific.
func authorityRank(a string) (class, length int) {
	switch {
	case a == "":
		return 0, 0
	case strings.HasPrefix(a, "*."):
		return 1, len(a)
	}
	return 2, len(a)
}

func morePrecise(a, b Match) bool {
	ac, al := authorityRank(a.Authority)
	bc, bl := authorityRank(b.Authority)
	if ac != bc {
		return ac > bc
	}
	if al != bl {
		return al > bl
	}
	return len(a.PathPrefix) > len(b.PathPrefix)
}

// hasError reports whether path already has an error, such as a value of the wrong type that
// leaves the field unset.
func hasError(errs *Errors, path string) bool {
	for _, e := range errs.List {
		if e.Path == path {
			return true
		}
	}
	return false
}

// UnixSocketPrefix starts a listen address that is a unix domain socket: "unix:" and the
// socket's absolute path, as gRPC names such targets.
const UnixSocketPrefix = "unix:"

// maxUnixSocketPath is the longest socket path Linux takes (sun_path holds 108 bytes, the last
// a NUL).
const maxUnixSocketPath = 107

// UnixSocketPath returns the path of a listen address of a unix domain socket, and whether it
// is one.
func UnixSocketPath(addr string) (string, bool) {
	return strings.CutPrefix(addr, UnixSocketPrefix)
}

func checkUnixSocket(addr string) error {
	path, _ := UnixSocketPath(addr)
	switch {
	case !filepath.IsAbs(path):
		return fmt.Errorf("%q: the socket path must be absolute (unix:/run/partroute/extproc.sock)", addr)
	case len(path) > maxUnixSocketPath:
		return fmt.Errorf("%q: the socket path is %d bytes, above the %d a unix socket takes", addr, len(path), maxUnixSocketPath)
	case strings.ContainsRune(path, 0):
		return fmt.Errorf("%q: the socket path holds a NUL byte", addr)
	}
	return nil
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has port %q, not a number from 0 to 65535", addr, port)
	}
	_ = host // an empty host listens on every address, which is the operator's choice
	return nil
}

func checkSettableHeader(name string) error {
	if name == "" || name[0] == ':' || name == "host" || strings.HasPrefix(name, "x-envoy") {
		return fmt.Errorf("%q cannot be set by an ext_proc server (pseudo-headers, host and x-envoy-* are Envoy's)", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%q is not a header name of letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// validName accepts a service name: letters, digits, '-', '_' and '.', starting with a letter
// or digit. The first character rules out "-", the metrics' service label of unmatched
// requests, and names that read as flags on a command line.
func validName(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z' || s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return s != ""
}

// validMethod accepts an upper-cased HTTP method token, such as GET or M-SEARCH.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

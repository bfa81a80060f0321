package resolver

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/readyourwrites"
)

// Naming answers which replicas serve a partition. A View answers from memory; pull sources
// answer through the resolution cache and may fail.
type Naming interface {
	Partition(ctx context.Context, svc *config.Service, key keying.Key) (*Partition, error)
}

// State is one consistent pair of configuration and naming view.
type State struct {
	Config *config.Config
	Naming Naming
	// Upstream, when set, hears the upstream response of every request routed with this
	// state, through the Feedback of its decision.
	Upstream UpstreamListener
}

// Resolver turns requests into decisions against the current State.
type Resolver struct {
	state atomic.Pointer[State]
	// pub is the state last published to held requests (see Publish), with the channel closed
	// when the next one is.
	pub   atomic.Pointer[publication]
	holds holds
}

// New returns a resolver serving st, published.
func New(st *State) *Resolver {
	r := &Resolver{}
	r.state.Store(st)
	r.pub.Store(&publication{state: st, next: make(chan struct{})})
	r.holds.init()
	return r
}

// Swap replaces the state in one step and publishes it; requests in flight finish on the
// state they started with. It is Stage and Publish at once, for a partroute whose Envoy does
// not take its endpoints from partroute's xDS server.
func (r *Resolver) Swap(st *State) {
	r.Stage(st)
	r.Publish(st)
}

// Stage replaces the state that decides new requests, without releasing the requests held for
// a failover: they are released by Publish, once Envoy has the endpoints of st.
func (r *Resolver) Stage(st *State) { r.state.Store(st) }

// State returns the current state.
func (r *Resolver) State() *State { return r.state.Load() }

// Decision is where a request goes.
type Decision struct {
	// Config is the configuration the decision was made with: the handler takes header names
	// and limits from it, so that one request never mixes two configurations.
	Config *config.Config
	// Service is the matched service; nil when none matched and the request passes through.
	Service *config.Service
	Key     keying.Key
	// Partition and Role are set when the request is routable.
	Partition *Partition
	Role      Role
	// NeedBody is set when the service keys on the body and the request carried none yet: the
	// caller must come back with the body.
	NeedBody bool
	// TokenOutcome is what read-your-writes made of the request, for a service with
	// replicas.readYourWrites: readyourwrites.Minted for a routed write, whose answer gives
	// the client the token of Token; the outcome of verifying the token a read carried;
	// otherwise readyourwrites.None. It sits in the padding after NeedBody, so that the
	// feature adds nothing to the size of a decision, which is copied along every request.
	TokenOutcome readyourwrites.Outcome
	// Err is set when the request is rejected.
	Err *Error
	// Upstream reports the upstream's answer to a routed request to the naming source that
	// resolved it, when that source wants it.
	Upstream Feedback
	// Wait is set when the request may be held for a failover (the service's
	// replicas.failoverWait): it needs the primary and the partition has none (Err is set), or
	// it was decided with a state not yet published to Envoy (Err is nil). The caller passes
	// the decision to Await, which returns the one to answer with.
	Wait time.Duration
}

// Resolve decides where req goes. It never panics on input: every failure is a Decision with
// Err set. It does not allocate on the success path.
func (r *Resolver) Resolve(ctx context.Context, req *keying.Request) Decision {
	return r.resolve(ctx, r.state.Load(), req)
}

// resolve decides where req goes with st.
func (r *Resolver) resolve(ctx context.Context, st *State, req *keying.Request) Decision {
	svc := st.Config.Match(req.Authority, req.Path)
	// The headers are bounded before anything reads them for a key, and for every request,
	// matched or not: keying reads a header by scanning the list, so a request of too many
	// headers would cost that much more for each key source.
	if e := checkHeaders(req.Headers, &st.Config.Limits.RequestHeaders); e != nil {
		return Decision{Config: st.Config, Service: svc, Err: e}
	}
	if svc == nil {
		if st.Config.Unmatched == config.Reject {
			return Decision{Config: st.Config, Err: errorf(NoService, "no service matches authority %s and path %s", keying.QuoteInput(req.Authority), keying.QuoteInput(keying.PathOnly(req.Path)))}
		}
		return Decision{Config: st.Config}
	}
	d := Decision{Config: st.Config, Service: svc}
	if svc.Keyer.NeedsBody() {
		if req.Body == nil {
			d.NeedBody = true
			return d
		}
		// The limit is checked before the body is parsed: an oversized body is rejected as
		// such, whatever it holds, and never costs a parse. It is checked here, not by the
		// caller, so that every way of asking (ext_proc, the CLI, /debug/resolve) answers alike.
		if len(req.Body) > st.Config.MaxBodyBytes {
			d.Err = errorf(BodyTooLarge, "request body of %d bytes is above the limit of %d bytes (maxBodyBytes)", len(req.Body), st.Config.MaxBodyBytes)
			return d
		}
	}
	key, fail := svc.Keyer.Partition(req)
	if fail != nil {
		d.Err = &Error{Code: failureCode(fail.Reason), Message: fail.Message}
		return d
	}
	d.Key = key
	p, err := st.Naming.Partition(ctx, svc, key)
	if err != nil {
		d.Err = namingError(svc, err)
		return d
	}
	d.Partition = p
	if st.Upstream != nil {
		d.Upstream = Feedback{listener: st.Upstream, service: svc, index: p.Index}
	}
	strong := false
	if v, ok := keying.Get(req.Headers, st.Config.Headers.Consistency); ok && strings.EqualFold(v, "strong") {
		strong = true
	}
	isRead := svc.IsRead(req.Method)
	if svc.ReadYourWrites > 0 {
		// One test of the window on the way of every request: the rest is out of line.
		d.TokenOutcome, strong = readYourWrites(req, &st.Config.ReadYourWrites, svc, p, isRead, strong)
	}
	role, ok := ChooseRole(p, svc.Reads, isRead, strong)
	d.Role = role
	if !ok {
		if d.TokenOutcome == readyourwrites.Minted {
			d.TokenOutcome = readyourwrites.None // a rejected write gives no token
		}
		which := role.String() + " replica"
		if role == RoleAny {
			which = "replica"
		}
		d.Err = errorf(PartitionUnavailable, "partition %s of service %s has no healthy %s", p.ID, svc.Name, which)
		if role == RolePrimary && svc.FailoverWait > 0 {
			d.Wait = svc.FailoverWait
		}
		return d
	}
	// A write decided with a state Envoy may not have the endpoints of yet could reach a
	// replica that is no longer the primary; where the service waits out failovers, it waits
	// for Envoy too.
	if role == RolePrimary && svc.FailoverWait > 0 && r.pub.Load().state != st {
		d.Wait = svc.FailoverWait
	}
	return d
}

// checkHeaders returns the rejection of a request whose headers exceed l, or nil. Names and
// values are counted as Envoy hands them over, pseudo-headers included.
func checkHeaders(h keying.Headers, l *config.HeaderLimits) *Error {
	if h == nil {
		return nil
	}
	n := h.Len()
	if n > l.MaxCount {
		return errorf(RequestHeadersTooLarge, "request has %d headers, above the limit of %d (limits.requestHeaders.maxCount)", n, l.MaxCount)
	}
	size := 0
	for i := 0; i < n; i++ {
		k, v := h.At(i)
		size += len(k) + len(v)
	}
	if size > l.MaxBytes {
		return errorf(RequestHeadersTooLarge, "request headers hold %d bytes, above the limit of %d bytes (limits.requestHeaders.maxBytes)", size, l.MaxBytes)
	}
	return nil
}

func failureCode(r keying.Reason) Code {
	switch r {
	case keying.Missing:
		return MissingPartitionKey
	case keying.Invalid:
		return InvalidPartitionKey
	}
	return PartitionKeyOutOfRange
}

func namingError(svc *config.Service, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: NamingUnavailable, Message: "service " + svc.Name + ": naming view unavailable", Cause: err}
}

// Snapshot is what a naming source provides for one configuration: the naming that answers
// lookups, the view Envoy's endpoints are built from, and, for a source that learns from
// upstream responses, the listener that hears them. Naming and View are the same value for a
// source that holds its whole view in memory; a pull source answers lookups through its cache
// and enumerates the view apart.
type Snapshot struct {
	Naming   Naming
	View     *View
	Upstream UpstreamListener
}

// StateOf is the state that serves snapshot s with configuration cfg.
func StateOf(cfg *config.Config, s Snapshot) *State {
	return &State{Config: cfg, Naming: s.Naming, Upstream: s.Upstream}
}

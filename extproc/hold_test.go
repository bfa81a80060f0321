package extproc

import (
	"context"
	"errors"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/resolver"
)

// sendStream is a fake stream whose responses go to a channel, so that a test reads them while
// the handler is still running.
type sendStream struct {
	*fakeStream
	sent chan *extprocv3.ProcessingResponse
}

func (s *sendStream) Send(m *extprocv3.ProcessingResponse) error {
	s.sent <- m
	return nil
}

// next returns the stream's next response.
func (s *sendStream) next(t *testing.T) *extprocv3.ProcessingResponse {
	t.Helper()
	select {
	case m := <-s.sent:
		decoded, err := decodeAnswer(m)
		if err != nil {
			t.Fatal(err)
		}
		return decoded
	case <-time.After(10 * time.Second):
		t.Fatal("no response from the handler")
		return nil
	}
}

// holdFixture is the example configuration with the users service waiting out failovers for
// wait, over a naming view in which users-3 (keys 26 to 33) has no healthy primary.
func holdFixture(t *testing.T, wait, limits string) *fixture {
	t.Helper()
	cfg := loadExampleConfig(t, "replicas: {reads: any}", "replicas: {reads: any, failoverWait: "+wait+"}", "services:", limits+"services:")
	return newFixtureWith(t, cfg, usersView(t, cfg, true))
}

// usersView is the example naming view with users-3's primary down or not.
func usersView(t *testing.T, cfg *config.Config, down bool) *resolver.View {
	t.Helper()
	if !down {
		return loadExampleView(t, cfg)
	}
	return loadExampleView(t, cfg, "{address: 127.0.0.1:8088, role: primary}", "{address: 127.0.0.1:8088, role: primary, healthy: false}")
}

// run processes one stream of msgs on a goroutine of its own, with ctx as the stream's.
func (f *fixture) run(ctx context.Context, msgs ...*extprocv3.ProcessingRequest) (*sendStream, chan error) {
	s := &sendStream{fakeStream: newFakeStream(msgs...), sent: make(chan *extprocv3.ProcessingResponse, 4)}
	s.ctx = ctx
	done := make(chan error, 1)
	go func() { done <- f.handler.Process(s) }()
	return s, done
}

// A held write gets, first, a response of override_message_timeout alone, sized for the wait
// and the answer after it, then, once a view with a primary is published, its routed answer.
func TestHeldWriteExtendsTimeoutThenRoutes(t *testing.T) {
	f := holdFixture(t, "5s", "")
	s, done := f.run(context.Background(), requestHeaders("PUT", "api.example.com", "/api/users/30"))
	first := s.next(t)
	if first.GetResponse() != nil || first.GetDynamicMetadata() != nil || first.GetModeOverride() != nil {
		t.Fatalf("first response %v: want override_message_timeout alone", first)
	}
	if got, want := first.GetOverrideMessageTimeout().AsDuration(), contract.HeldMessageTimeout(5*time.Second); got != want {
		t.Errorf("override_message_timeout %v, want %v", got, want)
	}
	testkit.WaitFor(t, "the write to be held", 5*time.Second, func() bool { return f.resolver.Held() == 1 })
	f.resolver.Swap(&resolver.State{Config: f.cfg, Naming: usersView(t, f.cfg, false)})
	answer := s.next(t)
	if !isRouted(answer) {
		t.Fatalf("answer after the failover %v: want routed", answer)
	}
	lb := answer.GetDynamicMetadata().GetFields()[contract.LBNamespace].GetStructValue().GetFields()
	if lb[contract.KeyPartition].GetStringValue() != "users-3" || lb[contract.KeyRole].GetStringValue() != "primary" {
		t.Errorf("routed to %v, want users-3 primary", lb)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(s.sent) != 0 {
		t.Errorf("%d responses more than the override and the answer", len(s.sent))
	}
}

// A write held to the end of its wait gets the override, then 503 partition_unavailable with
// retry-after.
func TestHeldWriteTimesOut(t *testing.T) {
	f := holdFixture(t, "100ms", "")
	s, done := f.run(context.Background(), requestHeaders("PUT", "api.example.com", "/api/users/30"))
	if first := s.next(t); first.GetOverrideMessageTimeout() == nil {
		t.Fatalf("first response %v: want override_message_timeout", first)
	}
	answer := s.next(t)
	checkRejection(t, answer, 503, "partition_unavailable")
	if setHeaders(t, answer.GetImmediateResponse().GetHeaders())["retry-after"] == "" {
		t.Error("the 503 has no retry-after")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Over the limit of held requests a write gets 503 at once: one response, no override.
func TestHeldWriteOverTheLimit(t *testing.T) {
	f := holdFixture(t, "10s", "limits: {failover: {maxHeld: 1}}\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, done := f.run(ctx, requestHeaders("PUT", "api.example.com", "/api/users/30"))
	if first := s.next(t); first.GetOverrideMessageTimeout() == nil {
		t.Fatalf("first response %v: want override_message_timeout", first)
	}
	testkit.WaitFor(t, "the write to be held", 5*time.Second, func() bool { return f.resolver.Held() == 1 })
	out := f.process(t, requestHeaders("PUT", "api.example.com", "/api/users/31"))
	if len(out) != 1 {
		t.Fatalf("%d responses over the limit, want 1: %v", len(out), out)
	}
	checkRejection(t, out[0], 503, "partition_unavailable")
	// Envoy going away ends the held stream with its context's error and nothing else.
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
		t.Fatalf("the held stream ended with %v, want its cancellation", err)
	}
}

// With the wait off, a write to a partition without a primary gets 503 at once, as before.
func TestWriteWithoutWaitIsRejectedAtOnce(t *testing.T) {
	f := holdFixture(t, "0s", "")
	out := f.process(t, requestHeaders("PUT", "api.example.com", "/api/users/30"))
	if len(out) != 1 {
		t.Fatalf("%d responses, want 1: %v", len(out), out)
	}
	checkRejection(t, out[0], 503, "partition_unavailable")
}

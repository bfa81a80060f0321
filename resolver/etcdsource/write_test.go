package etcdsource_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/resolver/etcdsource"
	"github.com/partroute/partroute/resolver/etcdsource/etcdtest"
)

// racingClient returns a client whose transactions are each preceded by the write of another
// client, up to times times: the race between a read and the transaction built on it, made
// certain rather than hoped for.
func racingClient(t *testing.T, srv *etcdtest.TestServer, times int32, other func(ctx context.Context)) *clientv3.Client {
	t.Helper()
	var left atomic.Int32
	left.Store(times)
	race := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasSuffix(method, "/Txn") && left.Add(-1) >= 0 {
			other(ctx)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{srv.Endpoint},
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(race)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFailoverLosesToAConcurrentWrite(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	plain := srv.Client()
	cfg, _ := writeExample(t, plain)
	const key = "services/regions/partitions/eu"
	theirs := getEntry(t, plain, key)
	f := false
	theirs.Replicas[1].Healthy = &f
	c := racingClient(t, srv, 1, func(context.Context) { put(t, plain, key, theirs) })

	_, err := etcdsource.Failover(ctx(t), c, "", cfg, "regions", "eu", "127.0.0.1:8092")
	var conflict *etcdsource.ConflictError
	if !errors.As(err, &conflict) || conflict.Key != config.DefaultEtcdPrefix+key {
		t.Fatalf("error %v, want a conflict on %s", err, key)
	}
	if !strings.Contains(err.Error(), "changed after it was read at revision") || !strings.Contains(err.Error(), "nothing was written") {
		t.Errorf("message %q", err)
	}
	if got := getEntry(t, plain, key); got.Replicas[0].Role != "primary" || got.Replicas[1].Healthy == nil {
		t.Errorf("the other writer's value was overwritten: %+v", got.Replicas)
	}
}

// withSettingsSecondary returns view with a secondary added to the settings singleton.
func withSettingsSecondary(t *testing.T, cfg *config.Config, view *resolver.View) *resolver.View {
	t.Helper()
	changed := resolver.Entries(view)
	changed["settings"][0].Replicas = append(changed["settings"][0].Replicas, resolver.ReplicaEntry{Address: "127.0.0.1:8100", Role: "secondary"})
	next, err := resolver.BuildView(changed, cfg, "test", "test")
	if err != nil {
		t.Fatal(err)
	}
	return next
}

func TestWriteRetriesAfterAConcurrentWrite(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	plain := srv.Client()
	cfg, view := writeExample(t, plain)
	// Their write lands between each read and transaction of ours: a new key our view lacks.
	c := racingClient(t, srv, 1, func(context.Context) {
		put(t, plain, "services/orders/partitions/singleton", `{"replicas":[]}`)
	})
	res, err := etcdsource.Write(ctx(t), c, "", withSettingsSecondary(t, cfg, view))
	if err != nil {
		t.Fatal(err)
	}
	// The second attempt saw their key and deleted it: the prefix holds exactly our view.
	if res.Written != 1 || res.Deleted != 1 || res.Unchanged != 9 {
		t.Errorf("write = %+v, want 1 written, 1 deleted, 9 unchanged", res)
	}
	ct, err := etcdsource.Read(ctx(t), plain, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ct.View(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Services["settings"].Partitions[0].Replicas) != 2 {
		t.Errorf("stored view lacks the change: %+v", got.Services["settings"])
	}
}

func TestWriteGivesUpAfterBoundedAttempts(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	plain := srv.Client()
	cfg, view := writeExample(t, plain)
	n := 0
	c := racingClient(t, srv, 100, func(context.Context) {
		n++
		put(t, plain, "services/orders/partitions/singleton", `{"replicas":[],"id":"o`+strings.Repeat("x", n)+`"}`)
	})
	if _, err := etcdsource.Write(ctx(t), c, "", withSettingsSecondary(t, cfg, view)); err == nil || !strings.Contains(err.Error(), "another writer changed the prefix during each of 3 attempts") {
		t.Errorf("error %v", err)
	}
	if n != 3 {
		t.Errorf("%d transactions tried, want 3", n)
	}
}

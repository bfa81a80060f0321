package xds

import (
	"context"
	"crypto/x509"
	"slices"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// certificateIdentities are the identities the verified client certificate of ctx's connection
// proves: its URI SANs (a SPIFFE id, for example), its DNS SANs and its subject common name, in
// that order. A connection without TLS, or whose client presented no certificate, proves none.
func certificateIdentities(ctx context.Context) []string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return identitiesOf(info.State.VerifiedChains[0][0])
}

func identitiesOf(c *x509.Certificate) []string {
	var ids []string
	for _, u := range c.URIs {
		ids = append(ids, u.String())
	}
	ids = append(ids, c.DNSNames...)
	if c.Subject.CommonName != "" {
		ids = append(ids, c.Subject.CommonName)
	}
	return ids
}

// boundTo reports whether node may be claimed by a connection proving ids.
func boundTo(node string, ids []string) bool {
	return node != "" && slices.Contains(ids, node)
}

package resolver

import (
	"time"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/readyourwrites"
)

// readYourWrites is what read-your-writes makes of a request to partition p of svc, whose
// window is on: a write is to mint a token (readyourwrites.Minted, if it is routed); a read
// that is not strong already is strong when it carries a valid token of the partition, as a
// read that asks for it is. Any other token leaves the read to the read policy.
func readYourWrites(req *keying.Request, r *config.ReadYourWrites, svc *config.Service, p *Partition, isRead, strong bool) (readyourwrites.Outcome, bool) {
	switch {
	case r.Keys == nil || isRead && strong:
		return readyourwrites.None, strong
	case !isRead:
		return readyourwrites.Minted, strong
	}
	o := verifyToken(req, r, svc, p)
	return o, o == readyourwrites.Accepted
}

// verifyToken returns what the read-your-writes token req carries is worth for a read of
// partition p of svc: readyourwrites.Accepted sends the read to the primary. The header is
// looked at before the cookie; a request with neither is None.
func verifyToken(req *keying.Request, r *config.ReadYourWrites, svc *config.Service, p *Partition) readyourwrites.Outcome {
	token, ok := "", false
	if r.Header != "" {
		token, ok = keying.Get(req.Headers, r.Header)
	}
	if !ok && r.Cookie != "" {
		token, ok = keying.Cookie(req.Headers, r.Cookie)
	}
	if !ok {
		return readyourwrites.None
	}
	return r.Keys.Verify(token, svc.Name, p.ID, time.Now())
}

// Token mints the read-your-writes token of a decision whose TokenOutcome is
// readyourwrites.Minted: it names the service and the partition, and expires the service's
// window from now. It returns "" for any other decision, and for a partition id too long for a
// token. The token is minted when the answer is built, not with the decision, so that a
// decision carries no token along the request's way.
func (d *Decision) Token() string {
	if d.TokenOutcome != readyourwrites.Minted || d.Service == nil || d.Partition == nil || d.Config.ReadYourWrites.Keys == nil {
		return ""
	}
	return d.Config.ReadYourWrites.Keys.Mint(d.Service.Name, d.Partition.ID, time.Now().Add(d.Service.ReadYourWrites))
}

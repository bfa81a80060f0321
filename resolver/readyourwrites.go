package resolver

import (
	"time"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/readyourwrites"
)

// verifyToken returns what the read-your-writes token req carries is worth for a read of
// partition p of svc, whose window is on: readyourwrites.Accepted sends the read to the
// primary. The header is looked at before the cookie; a request with neither is None.
func verifyToken(req *keying.Request, r *config.ReadYourWrites, svc *config.Service, p *Partition) readyourwrites.Outcome {
	if r.Keys == nil {
		return readyourwrites.None
	}
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

// mintToken returns the token of a write to partition p of svc, whose window is on, valid for
// the window from now; "" when none can be minted.
func mintToken(r *config.ReadYourWrites, svc *config.Service, p *Partition) string {
	if r.Keys == nil {
		return ""
	}
	return r.Keys.Mint(svc.Name, p.ID, time.Now().Add(svc.ReadYourWrites))
}

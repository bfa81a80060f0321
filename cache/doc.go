// Package cache is the bounded resolution cache in front of pull naming sources: it answers
// "which replicas serve this partition" from memory while the answer is fresh, and otherwise
// asks the source once per key, however many requests are waiting for that key.
//
// An entry is fresh for TTL after its fill began. When a fresh entry is missing, expired or
// invalidated, Get runs one fill per key (later callers join the fill in flight) under
// ResolveTimeout. If that fill fails, an entry no older than TTL+StaleIfError is served as
// Stale, because a slightly old replica set routes better than a 503; with nothing usable, Get
// returns an *UnavailableError, which callers map to 503 naming_unavailable.
//
// Invalidation never discards a value: Invalidate and InvalidateAll only make the next Get
// refill, so the old value is still there for stale-if-error and is handed to the fill as the
// previous value (Service Fabric clients send its version as PreviousRspVersion). Purge is the
// one operation that forgets values.
//
// A hit takes one short lock inside the LRU and does not allocate, because it runs once per
// proxied request.
package cache

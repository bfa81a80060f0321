// Package keying turns an HTTP request into a partition: it extracts the partition key from the
// request (path template segment, header, query parameter, cookie or JSON body field),
// transforms it (int64, hash or name) and maps it to a partition index with the service's
// partition scheme (uniformInt64, named or singleton, as Service Fabric defines them).
//
// Everything here is a pure function of its inputs. The request-path functions do not allocate
// for path, header and query sources with the int64 and hash transforms, because they run once
// per proxied request.
package keying

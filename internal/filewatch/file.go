package filewatch

import (
	"crypto/sha256"
	"os"
	"time"
)

// RacyWindow is how long after a file changes its modification time and size stop proving
// that it did not change again. File systems keep coarse timestamps (a clock tick, up to two
// seconds on some), so a second write within that time may leave both as they were; until the
// window has passed, every poll reads and hashes the file instead of trusting the stamp.
const RacyWindow = 2 * time.Second

// File follows one file's content. It is not safe for concurrent use: one goroutine polls it.
type File struct {
	path  string
	stamp stamp
}

// stamp is what was last read of the file.
type stamp struct {
	known   bool
	modTime time.Time
	size    int64
	sum     [32]byte
	// readAt is when the file was read: a stamp read soon after the file last changed is not
	// trusted (see RacyWindow).
	readAt time.Time
}

// New returns a follower of the file at path, which has read nothing yet: its first Read
// reports a change.
func New(path string) *File { return &File{path: path} }

// Path is the file followed.
func (f *File) Path() string { return f.path }

// Sum is the SHA-256 of the content last read; zero before the first read.
func (f *File) Sum() [32]byte { return f.stamp.sum }

// Read returns the file's content and whether it differs from the content last read. Without
// force, a file whose stamp proves it unchanged is not read (data is nil, changed false). With
// force (an operator's SIGHUP) the file is always read, and reported changed. A touch, or a
// rewrite with the same bytes, moves the stamp but is no change: the content's hash decides.
func (f *File) Read(force bool) (data []byte, changed bool, err error) {
	if !force && !f.moved() {
		return nil, false, nil
	}
	readAt := time.Now()
	fi, err := os.Stat(f.path)
	if err != nil {
		f.Forget()
		return nil, false, err
	}
	data, err = os.ReadFile(f.path)
	if err != nil {
		f.Forget()
		return nil, false, err
	}
	next := stamp{known: true, modTime: fi.ModTime(), size: fi.Size(), sum: sha256.Sum256(data), readAt: readAt}
	changed = force || !f.stamp.known || next.sum != f.stamp.sum
	f.stamp = next
	return data, changed, nil
}

// Forget makes the next Read read the file and report it changed, whatever its stamp: after
// content was rejected, a fix written within the same clock tick must still be seen.
func (f *File) Forget() { f.stamp = stamp{} }

// moved reports whether the file's modification time or size differs from when it was last
// read, or it was read too soon after it changed for those to be trusted.
func (f *File) moved() bool {
	if !f.stamp.known {
		return true
	}
	fi, err := os.Stat(f.path)
	return err != nil || !fi.ModTime().Equal(f.stamp.modTime) || fi.Size() != f.stamp.size || f.stamp.readAt.Sub(f.stamp.modTime) < RacyWindow
}

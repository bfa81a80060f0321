package filewatch

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f := New(path)
	if _, _, err := f.Read(false); err == nil {
		t.Fatal("a missing file read without error")
	}
	write("a")
	steps := []struct {
		name        string
		do          func()
		force       bool
		wantChanged bool
		wantData    string
	}{
		{"first read", func() {}, false, true, "a"},
		// Within the racy window the file is read again, but the same bytes are no change.
		{"unchanged", func() {}, false, false, "a"},
		{"rewritten", func() { write("bb") }, false, true, "bb"},
		{"same bytes written again", func() { write("bb") }, false, false, "bb"},
		{"touched", func() {
			now := time.Now().Add(time.Hour)
			if err := os.Chtimes(path, now, now); err != nil {
				t.Fatal(err)
			}
		}, false, false, "bb"},
		{"forced", func() {}, true, true, "bb"},
		{"forgotten", f.Forget, false, true, "bb"},
	}
	for _, s := range steps {
		s.do()
		data, changed, err := f.Read(s.force)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if changed != s.wantChanged || (data != nil && string(data) != s.wantData) {
			t.Errorf("%s: changed %v data %q, want %v %q", s.name, changed, data, s.wantChanged, s.wantData)
		}
	}
	if f.Sum() == ([32]byte{}) || f.Path() != path {
		t.Errorf("Sum %x Path %q", f.Sum(), f.Path())
	}
}

// TestStampTrustedAfterRacyWindow shows the cheap path: once the window has passed, an
// unchanged stamp is trusted and the file is not read.
func TestStampTrustedAfterRacyWindow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.yaml")
	if err := os.WriteFile(path, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	f := New(path)
	if _, changed, err := f.Read(false); err != nil || !changed {
		t.Fatalf("first read: %v %v", changed, err)
	}
	data, changed, err := f.Read(false)
	if err != nil || changed || data != nil {
		t.Errorf("a file with a trusted stamp was read again: %q %v %v", data, changed, err)
	}
}

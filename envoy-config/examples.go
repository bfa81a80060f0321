package envoyconfig

import (
	"embed"
	"os"
	"path/filepath"
)

// examples holds the example configuration and naming view, so that the binary carries a
// working default: `partroute demo` runs on them with no file of the user's.
//
//go:embed examples/partroute.yaml examples/naming.yaml
var examples embed.FS

// WriteExamples writes the embedded example files into dir and returns the configuration's
// path.
func WriteExamples(dir string) (string, error) {
	for _, name := range []string{"partroute.yaml", "naming.yaml"} {
		data, err := examples.ReadFile("examples/" + name)
		if err != nil {
			return "", err
		}
		//nolint:gosec // The examples are public, and the user reads and edits them: 0644, as for any file of theirs.
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "partroute.yaml"), nil
}

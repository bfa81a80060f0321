// Package filewatch tells when a file's content has changed, cheaply: a poll costs a stat while
// the file's modification time and size prove it unchanged, and a read and a hash otherwise.
// The configuration watcher and the file naming source each follow their file with it.
package filewatch

package warm

// SetMaxListLinks makes lists split sooner, so a test of a few blocks
// sees a list of several nodes; it returns the undo.
func SetMaxListLinks(n int) func() {
	old := maxListLinks
	maxListLinks = n
	return func() { maxListLinks = old }
}

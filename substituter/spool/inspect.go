package spool

// What a test (or a status page) may ask of the spool.

// Entry returns the table's entry for the request path key, or nil.
func (p *Spool[R]) Entry(key string) *Entry[R] {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.entries[key]
}

// Len is the number of entries in the table.
func (p *Spool[R]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

// Holders is the number of requests holding the entry for key.
func (p *Spool[R]) Holders(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.entries[key]; e != nil {
		return e.users
	}
	return 0
}

// Kept returns the request paths of the kept NARs, oldest first.
func (p *Spool[R]) Kept() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, len(p.kept))
	for i, e := range p.kept {
		keys[i] = e.NAR.Key
	}
	return keys
}

// Used is the bytes of the NARs in the spool, against MaxBytes.
func (p *Spool[R]) Used() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
}

// Sweep drops what has expired by Options.Now, as the spool's timers do.
func (p *Spool[R]) Sweep() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweepLocked()
	p.scheduleLocked()
}

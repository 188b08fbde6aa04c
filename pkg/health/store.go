package health

import (
	"context"
	"maps"
	"sync"
)

// Kind says what an entry of the Store is about.
type Kind int

// Kinds of Store entries.
const (
	KindServer Kind = iota // a probed SMB server, keyed by host:port
	KindVolume             // a staged volume, keyed by volume ID
	KindDir                // a volume's directory, keyed by DirTarget.Key
	KindWatch              // a directory watch, keyed by DirTarget.WatchKey
)

func (k Kind) String() string {
	switch k {
	case KindServer:
		return "server"
	case KindDir:
		return "dir"
	case KindWatch:
		return "watch"
	}
	return "volume"
}

// Key names one entry of the Store.
type Key struct {
	Kind Kind
	Name string // server address or volume ID
}

// Update is the current state of one entry, as a subscriber reads it.
type Update struct {
	Key
	Server Verdict       // KindServer
	Volume VolumeVerdict // KindVolume
	Dir    DirVerdict    // KindDir
	Watch  WatchState    // KindWatch
	Gone   bool          // the entry was removed (nobody probes the server, the volume was unstaged)
}

// Store holds the latest verdict on every probed server and every watched
// volume. Producers (the Prober, the Monitor) set verdicts; readers (RPCs)
// get them in O(1) without I/O; consumers (metrics, Events, remount)
// subscribe to changes. It is built before its producers and consumers, so
// nothing is wired through a callback.
type Store struct {
	mu      sync.Mutex
	servers map[string]Verdict
	volumes map[string]VolumeVerdict
	dirs    map[string]DirVerdict
	watches map[string]WatchState
	subs    map[*Subscription]struct{}
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{servers: map[string]Verdict{}, volumes: map[string]VolumeVerdict{}, dirs: map[string]DirVerdict{},
		watches: map[string]WatchState{}, subs: map[*Subscription]struct{}{}}
}

// SetServer records a server's verdict. Subscribers are told when the
// server is new or its state, reason or silence (frozen) changed.
func (s *Store) SetServer(addr string, v Verdict) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.servers[addr]
	s.servers[addr] = v
	if !ok || old.State != v.State || old.Reason != v.Reason || old.Silent != v.Silent {
		s.notifyLocked(Key{KindServer, addr})
	}
}

// DeleteServer forgets a server nobody probes any more.
func (s *Store) DeleteServer(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.servers[addr]; ok {
		delete(s.servers, addr)
		s.notifyLocked(Key{KindServer, addr})
	}
}

// Server returns a server's verdict; ok is false when nobody probes it.
func (s *Store) Server(addr string) (Verdict, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.servers[addr]
	return v, ok
}

// Servers returns the verdict of every probed server.
func (s *Store) Servers() map[string]Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.servers)
}

// SetVolume records a volume's verdict. Subscribers are told when the
// volume is new, its state or reason changed, or a remount is asked for.
func (s *Store) SetVolume(id string, v VolumeVerdict) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.volumes[id]
	s.volumes[id] = v
	if !ok || old.State != v.State || old.Reason != v.Reason || !old.RemountWanted.Equal(v.RemountWanted) {
		s.notifyLocked(Key{KindVolume, id})
	}
}

// DeleteVolume forgets an unstaged volume.
func (s *Store) DeleteVolume(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.volumes[id]; ok {
		delete(s.volumes, id)
		s.notifyLocked(Key{KindVolume, id})
	}
}

// Volume returns a volume's verdict; ok is false when it is not watched.
func (s *Store) Volume(id string) (VolumeVerdict, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.volumes[id]
	return v, ok
}

// SetDir records what a watch knows of a volume directory. Subscribers are
// told when its state, new name or watching changed.
func (s *Store) SetDir(key string, v DirVerdict) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.dirs[key]
	s.dirs[key] = v
	if !ok || old.State != v.State || old.RenamedTo != v.RenamedTo || old.Watching != v.Watching {
		s.notifyLocked(Key{KindDir, key})
	}
}

// DeleteDir forgets a directory nobody watches any more.
func (s *Store) DeleteDir(key string) { deleteEntry(s, s.dirs, KindDir, key) }

// Dir returns what is known of a volume directory.
func (s *Store) Dir(key string) (DirVerdict, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.dirs[key]
	return v, ok
}

// SetWatch records the state of a directory watch; every change is told.
func (s *Store) SetWatch(key string, v WatchState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.watches[key]; !ok || old != v {
		s.watches[key] = v
		s.notifyLocked(Key{KindWatch, key})
	}
}

// DeleteWatch forgets a watch that ended.
func (s *Store) DeleteWatch(key string) { deleteEntry(s, s.watches, KindWatch, key) }

// Watch returns the state of one directory watch.
func (s *Store) Watch(key string) (WatchState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.watches[key]
	return v, ok
}

// Watches returns the state of every directory watch.
func (s *Store) Watches() map[string]WatchState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.watches)
}

func deleteEntry[V any](s *Store, m map[string]V, kind Kind, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := m[key]; ok {
		delete(m, key)
		s.notifyLocked(Key{kind, key})
	}
}

func (s *Store) read(k Key) Update {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := Update{Key: k}
	switch k.Kind {
	case KindServer:
		u.Server, u.Gone = s.servers[k.Name], !has(s.servers, k.Name)
	case KindVolume:
		u.Volume, u.Gone = s.volumes[k.Name], !has(s.volumes, k.Name)
	case KindDir:
		u.Dir, u.Gone = s.dirs[k.Name], !has(s.dirs, k.Name)
	case KindWatch:
		u.Watch, u.Gone = s.watches[k.Name], !has(s.watches, k.Name)
	}
	return u
}

func has[V any](m map[string]V, k string) bool { _, ok := m[k]; return ok }

func (s *Store) notifyLocked(k Key) {
	for sub := range s.subs {
		sub.mark(k)
	}
}

// Subscribe returns a subscription to every later change; the caller
// closes it. Entries that exist already are delivered first, so a consumer
// that subscribes late still sees every current verdict.
func (s *Store) Subscribe() *Subscription {
	sub := &Subscription{store: s, queued: map[Key]bool{}, wake: make(chan struct{}, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr := range s.servers {
		sub.mark(Key{KindServer, addr})
	}
	for id := range s.volumes {
		sub.mark(Key{KindVolume, id})
	}
	for k := range s.dirs {
		sub.mark(Key{KindDir, k})
	}
	for k := range s.watches {
		sub.mark(Key{KindWatch, k})
	}
	s.subs[sub] = struct{}{}
	return sub
}

// Subscription delivers the changes of a Store to one consumer. Changes of
// one entry coalesce while they wait: a slow consumer never blocks a
// producer and never falls behind by more than one update per entry; what
// it reads is always the entry's latest state.
type Subscription struct {
	store  *Store
	mu     sync.Mutex
	order  []Key
	queued map[Key]bool
	wake   chan struct{}
}

func (sub *Subscription) mark(k Key) {
	sub.mu.Lock()
	if !sub.queued[k] {
		sub.queued[k] = true
		sub.order = append(sub.order, k)
	}
	sub.mu.Unlock()
	poke(sub.wake)
}

// Next waits for the next changed entry and returns its current state, in
// the order the entries first changed. It returns ctx's error when ctx ends.
func (sub *Subscription) Next(ctx context.Context) (Update, error) {
	for {
		sub.mu.Lock()
		if len(sub.order) > 0 {
			k := sub.order[0]
			sub.order = sub.order[1:]
			delete(sub.queued, k)
			sub.mu.Unlock()
			return sub.store.read(k), nil
		}
		sub.mu.Unlock()
		select {
		case <-ctx.Done():
			return Update{}, ctx.Err()
		case <-sub.wake:
		}
	}
}

// Close ends the subscription.
func (sub *Subscription) Close() {
	sub.store.mu.Lock()
	delete(sub.store.subs, sub)
	sub.store.mu.Unlock()
}

// Consume calls f with every update of sub until ctx ends, then closes sub.
func Consume(ctx context.Context, sub *Subscription, f func(Update)) error {
	defer sub.Close()
	for {
		u, err := sub.Next(ctx)
		if err != nil {
			return nil
		}
		f(u)
	}
}

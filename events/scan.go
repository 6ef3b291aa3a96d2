package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// DefaultScanIdle is how long Scan waits for the next message before it
// asks the stream leader whether any are left.
const DefaultScanIdle = 15 * time.Second

// defaultScanStalls is how many idle waits in a row, while the leader
// still holds a message the scan has not had, Scan sits through before it
// gives up: a minute at DefaultScanIdle.
const defaultScanStalls = 4

// ScanOptions configure Scan.
type ScanOptions struct {
	// Consumer selects the messages (FilterSubjects; none is the whole
	// stream) and where to begin: DeliverPolicy all (the default), by
	// start sequence or by start time. Its other fields (InactiveThreshold)
	// pass to the ordered consumer as they are.
	Consumer jetstream.OrderedConsumerConfig
	// OnTotal, if set, is called before the first message with the number
	// of messages expected. When more turn up, it is called again with a
	// larger estimate: the reader's server may still have been catching up
	// on the stream when it counted, and a start sequence or time gives the
	// leader nothing to count with.
	OnTotal func(total uint64)
	// Idle is how long to wait for the next message before asking the
	// stream leader whether any are left; 0 is DefaultScanIdle.
	Idle time.Duration
	// Stalls is how many idle waits in a row, while the leader holds a
	// message not yet read, end the scan with a transient error; 0 is 4.
	Stalls int
	// Batch is how many messages are pulled at once; 0 is 256.
	Batch int
}

// Scan reads, in stream order, the messages that o.Consumer selects, up to
// the last one the stream leader held when Scan began; later ones are left
// for the next run. It hands each to fn; an error from fn stops the scan
// and is returned.
//
// The end comes from the stream leader, not from the reader's own count:
// on a JetStream cluster the server places the reader (an R1 ordered
// consumer) on any member of the stream, and a member that has just come
// back and is still catching up counts, and delivers at first, only the
// part of the stream it holds. Scan keeps reading until it has had the
// leader's last message. Messages the stream's limits remove meanwhile
// (max-age, max-bytes) are not waited for: when nothing arrives for
// o.Idle, Scan asks the leader for the next message it has not read, and
// ends when there is none up to the end.
//
// Errors: a missing stream is errs.Invalid; a NATS that does not answer,
// or a reader that delivers nothing for o.Stalls idle waits while the
// leader holds more, is errs.Transient (run again); a cancelled ctx
// returns ctx.Err().
func Scan(ctx context.Context, js jetstream.JetStream, stream string, o ScanOptions, fn func(jetstream.Msg) error) error {
	if o.Idle <= 0 {
		o.Idle = DefaultScanIdle
	}
	if o.Stalls <= 0 {
		o.Stalls = defaultScanStalls
	}
	if o.Batch <= 0 {
		o.Batch = 256
	}
	onTotal := o.OnTotal
	if onTotal == nil {
		onTotal = func(uint64) {}
	}
	cfg := o.Consumer
	filters := cfg.FilterSubjects
	if len(filters) == 0 {
		filters = []string{">"}
	}
	what := fmt.Sprintf("read %s from stream %s", strings.Join(filters, ","), stream)
	s, err := js.Stream(ctx, stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return errs.Errorf(errs.Invalid, "stream %s does not exist on this NATS (nothing was ever published, or --stream/--nats-url name another)", stream)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errs.E(errs.Transient, fmt.Errorf("stream %s: %w", stream, err))
	}
	lead := leader{js: js, stream: stream, timeout: leaderRequestTimeout}
	// While reading, a question to the leader waits about as long as
	// a message would: the stall count bounds the whole wait.
	idleLead := lead
	idleLead.timeout = min(leaderRequestTimeout, max(o.Idle, 2*time.Second))

	// Where the selection begins and ends, as the leader has it.
	var first uint64
	switch cfg.DeliverPolicy {
	case jetstream.DeliverAllPolicy:
		first = 1
	case jetstream.DeliverByStartSequencePolicy:
		first = max(cfg.OptStartSeq, 1)
	case jetstream.DeliverByStartTimePolicy:
		if cfg.OptStartTime == nil {
			return errs.Errorf(errs.Invalid, "%s: deliver by start time without a time", what)
		}
	default:
		return errs.Errorf(errs.Invalid, "%s: deliver policy %s: Scan reads from the start, a sequence or a time", what, cfg.DeliverPolicy)
	}
	end, err := lead.last(ctx, filters)
	if err != nil {
		return wrapScan(ctx, what, err)
	}
	if cfg.DeliverPolicy == jetstream.DeliverByStartTimePolicy && end > 0 {
		if first, err = lead.next(ctx, 0, cfg.OptStartTime, filters); err != nil {
			return wrapScan(ctx, what, err)
		}
	}
	if end == 0 || first == 0 || first > end {
		onTotal(0)
		return nil
	}

	c, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return wrapScan(ctx, what, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return wrapScan(ctx, what, err)
	}
	// Counted after the reader was placed: the reader's server holds no
	// more than the leader had a moment later, so the total stays a lower
	// bound of what is up to end (unless limits remove some meanwhile).
	total := info.NumPending
	if cfg.DeliverPolicy == jetstream.DeliverAllPolicy {
		if n, err := lead.count(ctx, s, filters); err == nil {
			total = max(total, n)
		}
	}
	if end, err = lead.last(ctx, filters); err != nil {
		return wrapScan(ctx, what, err)
	}
	onTotal(total)

	it, err := c.Messages(jetstream.PullMaxMessages(o.Batch))
	if err != nil {
		return wrapScan(ctx, what, err)
	}
	defer it.Stop()
	var got, last uint64
	stalls := 0
	for {
		// Messages already pulled are handed out without a look at ctx:
		// a cancelled scan stops here, before the next one.
		if err := ctx.Err(); err != nil {
			return err
		}
		nctx, cancel := context.WithTimeout(ctx, o.Idle)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				return errs.E(errs.Transient, fmt.Errorf("%s: %w", what, err))
			}
			// Idle: is anything left up to the end?
			next, lerr := idleLead.next(ctx, last+1, nil, filters)
			if lerr == nil && (next == 0 || next > end) {
				return nil // the rest was removed by the stream's limits
			}
			if stalls++; stalls >= o.Stalls {
				if lerr != nil {
					return wrapScan(ctx, what, fmt.Errorf("nothing delivered for %s after sequence %d of %d, and the stream leader does not answer: %w",
						time.Duration(o.Stalls)*o.Idle, last, end, lerr))
				}
				return errs.Errorf(errs.Transient, "%s: nothing delivered for %s after sequence %d, although the stream leader holds sequence %d (of %d): the server the reader was placed on may be cut off from the stream; run again",
					what, time.Duration(o.Stalls)*o.Idle, last, next, end)
			}
			continue
		}
		stalls = 0
		meta, err := m.Metadata()
		if err != nil {
			return errs.E(errs.Transient, fmt.Errorf("%s: message without metadata: %w", what, err))
		}
		seq := meta.Sequence.Stream
		if seq > end {
			return nil // stored after the scan began: left for the next run
		}
		got, last = got+1, seq
		if got > total {
			total = got + min(meta.NumPending, end-seq)
			onTotal(total)
		}
		if err := fn(m); err != nil {
			return err
		}
		if seq == end {
			return nil
		}
	}
}

func wrapScan(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errs.Classified(err) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return errs.E(errs.Transient, fmt.Errorf("%s: %w", what, err))
}

// LastMsg returns the last message on subject (wildcards allowed) as the
// stream leader holds it, or nil when there is none. Unlike an ordered
// consumer with DeliverLastPolicy, which the cluster may place on a member
// still catching up, it never answers with an older message.
func LastMsg(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	m, err := leader{js: js, stream: stream, timeout: leaderRequestTimeout}.get(ctx, msgGetRequest{LastFor: subject})
	if err != nil {
		return nil, wrapScan(ctx, fmt.Sprintf("read the last %s from stream %s", subject, stream), err)
	}
	return m, nil
}

// leader asks a stream's leader about its messages.
type leader struct {
	js      jetstream.JetStream
	stream  string
	timeout time.Duration // of one request
}

// msgGetRequest is JetStream's STREAM.MSG.GET request.
type msgGetRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	LastFor   string     `json:"last_by_subj,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
	NoHeaders bool       `json:"no_hdr,omitempty"`
}

type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Data     []byte    `json:"data"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// leaderRequestTimeout bounds one request: a cluster electing a leader
// does not answer meanwhile, and a request nobody answers waits for ever.
const leaderRequestTimeout = 10 * time.Second

// get sends a message-get request on the JetStream API, which only the
// stream leader answers. jetstream.Stream's GetMsg and GetLastMsgForSubject
// use the direct-get API instead when the stream allows direct gets, and
// any member answers those, one still catching up included.
func (l leader) get(ctx context.Context, req msgGetRequest) (*jetstream.RawStreamMsg, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	opts := l.js.Options()
	prefix := jetstream.DefaultAPIPrefix
	switch {
	case opts.Domain != "":
		prefix = "$JS." + opts.Domain + ".API."
	case opts.APIPrefix != "":
		prefix = opts.APIPrefix
		if !strings.HasSuffix(prefix, ".") {
			prefix += "."
		}
	}
	rctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	reply, err := l.js.Conn().RequestWithContext(rctx, prefix+"STREAM.MSG.GET."+l.stream, b)
	if err != nil {
		return nil, err
	}
	var resp msgGetResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("message get: %w", err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound) {
			return nil, nil
		}
		if resp.Error.ErrCode == int(jetstream.JSErrCodeStreamNotFound) {
			return nil, errs.Errorf(errs.Invalid, "stream %s does not exist on this NATS", l.stream)
		}
		return nil, fmt.Errorf("message get: %s (code %d)", resp.Error.Description, resp.Error.ErrCode)
	}
	if resp.Message == nil {
		return nil, errors.New("message get: an answer without a message")
	}
	return &jetstream.RawStreamMsg{Subject: resp.Message.Subject, Sequence: resp.Message.Sequence,
		Data: resp.Message.Data, Time: resp.Message.Time}, nil
}

// last is the sequence of the last message on any of filters; 0 if none.
func (l leader) last(ctx context.Context, filters []string) (uint64, error) {
	var end uint64
	for _, f := range filters {
		m, err := l.get(ctx, msgGetRequest{LastFor: f, NoHeaders: true})
		if err != nil {
			return 0, err
		}
		if m != nil {
			end = max(end, m.Sequence)
		}
	}
	return end, nil
}

// next is the sequence of the first message on any of filters at or after
// seq (or, with at set, stored at or after that time); 0 if none.
func (l leader) next(ctx context.Context, seq uint64, at *time.Time, filters []string) (uint64, error) {
	var first uint64
	for _, f := range filters {
		req := msgGetRequest{NextFor: f, NoHeaders: true}
		if at != nil {
			req.StartTime = at
		} else {
			req.Seq = max(seq, 1)
		}
		m, err := l.get(ctx, req)
		if err != nil {
			return 0, err
		}
		if m != nil && (first == 0 || m.Sequence < first) {
			first = m.Sequence
		}
	}
	return first, nil
}

// count is how many messages the stream leader holds on filters.
func (l leader) count(ctx context.Context, s jetstream.Stream, filters []string) (uint64, error) {
	var n uint64
	for _, f := range filters {
		if f == ">" {
			info, err := s.Info(ctx)
			if err != nil {
				return 0, err
			}
			n += info.State.Msgs
			continue
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(f))
		if err != nil {
			return 0, err
		}
		for _, c := range info.State.Subjects {
			n += c
		}
	}
	return n, nil
}

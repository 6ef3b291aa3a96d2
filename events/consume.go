package events

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// MaxDeadPayload bounds the original payload kept in a dead letter, so that
// the dead letter itself fits the stream's message size limit.
const MaxDeadPayload = 256 << 10

// Delivery is one event handed to a Handler.
type Delivery struct {
	Event Event
	Msg   jetstream.Msg
	Meta  *jetstream.MsgMetadata
}

// Handler handles one event. Its error's kind (package errs) decides the
// ack: nil acks; Invalid or Corrupt terminates the message and dead-letters
// it; Transient retries it with backoff for as long as it takes; NotYet (and
// an unclassified error) retries it with backoff until
// ConsumerOptions.MaxAttempts deliveries, then dead-letters it as
// exhausted; Config gives the event back and stops Consume, which returns
// the error: no event can succeed until an operator fixes the deployment. A Handler must be idempotent: a
// crash between its work and the ack delivers the event again.
type Handler func(ctx context.Context, d Delivery) error

// ConsumerOptions configure Consume.
type ConsumerOptions struct {
	Stream        string
	Durable       string
	FilterSubject string
	// FilterSubjects, if set, is used instead of FilterSubject.
	FilterSubjects []string
	// Replicas of the consumer's state on a NATS cluster; 0 takes the
	// stream's (StreamReplicas), so that a lost server loses no acks.
	Replicas int
	// DeliverPolicy applies when the durable consumer is first created.
	DeliverPolicy jetstream.DeliverPolicy
	OptStartSeq   uint64
	OptStartTime  *time.Time
	// Concurrency is how many events are handled at once. Default 4.
	Concurrency int
	// AckWait is how long the server waits for an ack before redelivering;
	// a running handler sends progress every AckWait/3 so long work is not
	// redelivered while it runs. Default 60 s.
	AckWait time.Duration
	// MaxAttempts bounds deliveries of an event that fails with a NotYet
	// or unclassified error. Default 10.
	MaxAttempts int
	// Backoff is the delay before each retry; the last value repeats.
	Backoff []time.Duration
	// ShutdownTimeout is how long in-flight handlers may run after ctx is
	// done before their context is cancelled. Default 30 s.
	ShutdownTimeout time.Duration
	// OnResult, if set, is called after each event with its outcome.
	OnResult func(d Delivery, outcome Outcome, err error, took time.Duration)
	// OnLag, if set, is called every LagInterval with the consumer's
	// backlog: events not yet delivered, delivered but not acked, and
	// redelivered.
	OnLag       func(pending uint64, ackPending, redelivered int)
	LagInterval time.Duration
	Logger      *zap.Logger
}

// Outcome is what happened to a delivered event.
type Outcome string

const (
	Acked        Outcome = "acked"
	Retried      Outcome = "retried"
	DeadLettered Outcome = "dead_lettered"
)

// DefaultBackoff is the retry schedule: quick at first for blips, then
// capped at five minutes for outages.
var DefaultBackoff = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
	30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute,
}

func (o *ConsumerOptions) defaults() {
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.AckWait <= 0 {
		o.AckWait = 60 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if len(o.Backoff) == 0 {
		o.Backoff = DefaultBackoff
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// ConsumerConfig returns the durable consumer's JetStream configuration.
func (o ConsumerOptions) ConsumerConfig() jetstream.ConsumerConfig {
	o.defaults()
	return jetstream.ConsumerConfig{
		Durable:        o.Durable,
		FilterSubject:  o.FilterSubject,
		FilterSubjects: o.FilterSubjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        o.AckWait,
		// Unlimited: retries are decided here, from the error's kind, and an
		// event the server stopped delivering would be lost silently.
		MaxDeliver:    -1,
		MaxAckPending: 20000,
		DeliverPolicy: o.DeliverPolicy,
		OptStartSeq:   o.OptStartSeq,
		OptStartTime:  o.OptStartTime,
		Replicas:      o.Replicas,
	}
}

// BackoffFor returns the delay before retrying after the n-th delivery.
func BackoffFor(backoff []time.Duration, n uint64) time.Duration {
	if len(backoff) == 0 {
		return time.Second
	}
	if n == 0 {
		n = 1
	}
	if int(n) > len(backoff) {
		return backoff[len(backoff)-1]
	}
	return backoff[n-1]
}

// Consume runs h on every event of the durable consumer until ctx is done,
// then stops fetching, lets in-flight handlers finish within
// ShutdownTimeout, and returns. Events it did not finish are redelivered.
// A handler's Config error stops it the same way, and Consume returns that
// error (kind Config): the worker exits with the operator's message instead
// of dead-lettering every event.
func Consume(ctx context.Context, js jetstream.JetStream, o ConsumerOptions, h Handler) error {
	o.defaults()
	log := o.Logger.With(zap.String("consumer", o.Durable))
	if o.Replicas == 0 {
		r, err := StreamReplicas(ctx, js, o.Stream)
		if err != nil {
			return err
		}
		o.Replicas = r
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, o.Stream, o.ConsumerConfig())
	if err != nil {
		return errs.E(errs.Transient, fmt.Errorf("consumer %s on stream %s: %w", o.Durable, o.Stream, err))
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(o.Concurrency))
	if err != nil {
		return errs.E(errs.Transient, fmt.Errorf("consumer %s: %w", o.Durable, err))
	}

	if o.OnLag != nil {
		go watchLag(ctx, cons, o)
	}

	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	// fetchCtx ends the fetching: when ctx is done, or when a handler
	// finds the deployment misconfigured (its cause is that error).
	fetchCtx, stopFetching := context.WithCancelCause(ctx)
	defer stopFetching(nil)
	misconfigured := func(err error) { stopFetching(err) }
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.Concurrency)
	stopped := make(chan struct{})
	go func() {
		<-fetchCtx.Done()
		it.Drain()
		close(stopped)
	}()

	var fatal error
	for {
		msg, err := it.Next()
		fetched := time.Now()
		if err != nil {
			if fetchCtx.Err() != nil {
				break
			}
			// (The iterator's error does not wrap nats.ErrConnectionClosed.)
			if errors.Is(err, nats.ErrConnectionClosed) || js.Conn().IsClosed() {
				fatal = errs.E(errs.Transient, fmt.Errorf("consumer %s: %w", o.Durable, err))
				it.Stop()
				break
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				break
			}
			// NATS away or restarting: the connection reconnects by itself;
			// don't spin meanwhile.
			log.Warn("fetch failed; retrying", zap.Error(err))
			select {
			case <-fetchCtx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if fetchCtx.Err() != nil {
			// Fetched after shutdown began: hand it back at once.
			_ = msg.Nak()
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			handleOne(workCtx, js, o, log, msg, h, fetched, misconfigured)
		}()
	}
	if fatal == nil {
		<-stopped
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(o.ShutdownTimeout):
		log.Warn("shutdown timeout: cancelling in-flight work; it will be redelivered")
		cancelWork()
		<-done
	}
	if fatal == nil && ctx.Err() == nil {
		if cause := context.Cause(fetchCtx); errs.Is(cause, errs.Config) {
			fatal = fmt.Errorf("consumer %s stopped: the deployment is misconfigured: %w", o.Durable, cause)
		}
	}
	return fatal
}

// fetched is when the message left the iterator; it waited from then for
// a free worker.
func handleOne(ctx context.Context, js jetstream.JetStream, o ConsumerOptions, log *zap.Logger, msg jetstream.Msg, h Handler, fetched time.Time, misconfigured func(error)) {
	start := time.Now()
	meta, err := msg.Metadata()
	if err != nil {
		log.Error("message without JetStream metadata; terminating", zap.Error(err))
		_ = msg.Term()
		return
	}
	log = log.With(zap.String("subject", msg.Subject()), zap.Uint64("stream_seq", meta.Sequence.Stream),
		zap.Uint64("deliveries", meta.NumDelivered))
	d := Delivery{Msg: msg, Meta: meta}
	report := func(out Outcome, err error) {
		if o.OnResult != nil {
			o.OnResult(d, out, err, time.Since(start))
		}
	}

	ev, err := Decode(msg.Data())
	if err != nil {
		deadLetter(ctx, js, log, msg, meta, "invalid", err)
		report(DeadLettered, err)
		return
	}
	d.Event = ev
	log = log.With(zap.String("event_id", Head(ev).ID), zap.String("event_type", Head(ev).Type))

	hbCtx, stopHB := context.WithCancel(ctx)
	go heartbeat(hbCtx, msg, o.AckWait/3)
	hstart := time.Now()
	err = h(ctx, d)
	stopHB()

	switch {
	case err == nil:
		astart := time.Now()
		if aerr := msg.DoubleAck(context.WithoutCancel(ctx)); aerr != nil {
			// The work is done and idempotent: a redelivery finds it done.
			log.Warn("ack failed; the event will be redelivered and found done", zap.Error(aerr))
		}
		if ce := log.Check(zap.DebugLevel, "event acked"); ce != nil {
			// Where a worker's slot went: from its stream time to this
			// delivery, decoding, the handler, the ack's round trip.
			ce.Write(zap.Duration("stream_to_fetched", fetched.Sub(meta.Timestamp)),
				zap.Duration("waited_for_worker", start.Sub(fetched)),
				zap.Duration("decode", hstart.Sub(start)), zap.Duration("handler", astart.Sub(hstart)),
				zap.Duration("ack", time.Since(astart)))
		}
		report(Acked, nil)
	case ctx.Err() != nil:
		// Shutting down: give it back for another worker, no delay.
		_ = msg.Nak()
		report(Retried, err)
	case errs.Is(err, errs.Invalid):
		deadLetter(ctx, js, log, msg, meta, "invalid", err)
		report(DeadLettered, err)
	case errs.Is(err, errs.Corrupt):
		deadLetter(ctx, js, log, msg, meta, "corrupt", err)
		report(DeadLettered, err)
	case errs.Is(err, errs.Config):
		// Not the event's fault: give it back for after the fix, and stop.
		log.Error("the deployment is misconfigured; stopping this worker", zap.Error(err))
		_ = msg.NakWithDelay(BackoffFor(o.Backoff, meta.NumDelivered))
		report(Retried, err)
		misconfigured(err)
	case !errs.Is(err, errs.Transient) && meta.NumDelivered >= uint64(o.MaxAttempts):
		deadLetter(ctx, js, log, msg, meta, "exhausted",
			fmt.Errorf("gave up after %d deliveries: %w", meta.NumDelivered, err))
		report(DeadLettered, err)
	default:
		delay := BackoffFor(o.Backoff, meta.NumDelivered)
		if !errs.Classified(err) {
			log.Error("unclassified error: retried as not_yet; its kind is missing", zap.Error(err))
		}
		log.Warn("event failed; will retry", zap.Error(err), zap.String("kind", errs.KindOf(err).String()),
			zap.Duration("retry_in", delay))
		_ = msg.NakWithDelay(delay)
		report(Retried, err)
	}
}

func watchLag(ctx context.Context, cons jetstream.Consumer, o ConsumerOptions) {
	every := o.LagInterval
	if every <= 0 {
		every = 15 * time.Second
	}
	for {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if info, err := cons.Info(ictx); err == nil {
			o.OnLag(info.NumPending, info.NumAckPending, info.NumRedelivered)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

func heartbeat(ctx context.Context, msg jetstream.Msg, every time.Duration) {
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = msg.InProgress()
		}
	}
}

// deadLetter publishes a DeadLetter event for msg, then terminates msg. If
// the dead letter cannot be stored, msg is retried instead: an event is
// never dropped without a trace.
func deadLetter(ctx context.Context, js jetstream.JetStream, log *zap.Logger, msg jetstream.Msg, meta *jetstream.MsgMetadata, kind string, cause error) {
	if strings.HasPrefix(msg.Subject(), SubjectDeadPrefix) {
		// A dead letter is never dead-lettered again: that would loop.
		log.Error("dead letter could not be handled; terminating it", zap.Error(cause))
		_ = msg.TermWithReason(kind)
		return
	}
	reason := cause.Error()
	if len(reason) > 8000 {
		reason = reason[:8000] + "..."
	}
	payload := msg.Data()
	truncated := false
	if len(payload) > MaxDeadPayload {
		payload, truncated = payload[:MaxDeadPayload], true
	}
	dl := &DeadLetter{
		Subject:          msg.Subject(),
		StreamSeq:        meta.Sequence.Stream,
		Consumer:         meta.Consumer,
		Deliveries:       meta.NumDelivered,
		Kind:             kind,
		Reason:           reason,
		Payload:          payload,
		PayloadTruncated: truncated,
	}
	Seal(dl)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := Publish(pctx, js, SubjectDead(msg.Subject()), dl); err != nil {
		log.Error("cannot store dead letter; will retry the event", zap.Error(err), zap.String("reason", reason))
		_ = msg.NakWithDelay(30 * time.Second)
		return
	}
	log.Error("event dead-lettered", zap.String("kind", kind), zap.String("reason", reason),
		zap.String("dead_letter_id", dl.ID))
	_ = msg.TermWithReason(kind + ": " + reason)
}

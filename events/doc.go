// Package events owns nix-ipfs's wire format: the event types that flow over
// NATS JetStream, their subjects, their deterministic ids, their validation,
// and the stream they live in.
//
// The data's way through the system is written in these types:
//
//	nix-ipfs-hook  --Built-->      publisher
//	publisher      --Published-->  mirror(s), gc, replay
//	mirror         --Pinned-->     gc, status
//	any worker     --DeadLetter--> people (nix-ipfs status, docs/OPERATIONS.md)
//
// Every event starts with a header {type, id, time}. Type strings carry a
// version ("nixipfs.built.v1"); a new version is a new type, and old ones are
// never changed. The JSON Schema of each type is in schemas/, generated from
// these Go types (go generate ./events), and every event is checked against
// it both when published and when consumed. The id is derived from the
// event's content and sent as Nats-Msg-Id, so JetStream stores a repeated
// publish of the same fact once.
package events

//go:generate go run ../schemas/gen -out ../schemas

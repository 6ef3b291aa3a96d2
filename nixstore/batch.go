package nixstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// pathInfosQuery is pathInfoQuery for a set of paths given as a JSON
// array: one statement, so one snapshot and one round through SQLite
// instead of one per path.
const pathInfosQuery = `
SELECT v.path, v.hash, v.registrationTime, v.deriver, v.narSize, v.ultimate, v.sigs, v.ca,
       (SELECT group_concat(r.path, ' ')
          FROM Refs JOIN ValidPaths r ON r.id = Refs.reference
         WHERE Refs.referrer = v.id)
  FROM ValidPaths v
 WHERE v.path IN (SELECT value FROM json_each(?))`

// QueryPathInfos returns the metadata of every path of paths that is valid
// in the store, by path; a path that is not valid is absent from the map
// (QueryPathInfo says why). The publisher asks for the thousands of small
// paths of one closure at once.
func (d *DB) QueryPathInfos(ctx context.Context, paths []string) (map[string]*PathInfo, error) {
	for _, p := range paths {
		if err := storepath.Validate(d.storeDir, p); err != nil {
			return nil, errs.E(errs.Invalid, err)
		}
	}
	out := make(map[string]*PathInfo, len(paths))
	if len(paths) == 0 {
		return out, nil
	}
	arg, err := json.Marshal(paths)
	if err != nil {
		return nil, err
	}
	rows, err := d.db.QueryContext(ctx, pathInfosQuery, string(arg))
	if err != nil {
		return nil, d.dbError("query path infos", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			path, hash        string
			regTime           int64
			narSize, ultimate sql.NullInt64
			deriver, sigs, ca sql.NullString
			refs              sql.NullString
		)
		if err := rows.Scan(&path, &hash, &regTime, &deriver, &narSize, &ultimate, &sigs, &ca, &refs); err != nil {
			return nil, d.dbError("query path infos", err)
		}
		info, err := d.pathInfo(path, hash, regTime, deriver, narSize, ultimate, sigs, ca, refs)
		if err != nil {
			return nil, err
		}
		out[path] = info
	}
	if err := rows.Err(); err != nil {
		return nil, d.dbError("query path infos", err)
	}
	return out, nil
}

// pathInfo makes a PathInfo of one row of pathInfoQuery or pathInfosQuery.
func (d *DB) pathInfo(path, hash string, regTime int64, deriver sql.NullString, narSize, ultimate sql.NullInt64, sigs, ca, refs sql.NullString) (*PathInfo, error) {
	narHash, err := nix32Hash(hash)
	if err != nil {
		return nil, fmt.Errorf("nix database %s: %s: hash %q: %w", d.dbPath, path, hash, err)
	}
	info := &PathInfo{
		Path:             path,
		NarHash:          narHash,
		Deriver:          deriver.String,
		CA:               ca.String,
		RegistrationTime: time.Unix(regTime, 0),
		Ultimate:         ultimate.Valid && ultimate.Int64 != 0,
	}
	if s := strings.Fields(sigs.String); len(s) > 0 {
		info.Sigs = s
	}
	if narSize.Valid && narSize.Int64 > 0 {
		info.NarSize = uint64(narSize.Int64)
	}
	if r := strings.Fields(refs.String); len(r) > 0 {
		slices.Sort(r)
		info.References = r
	}
	return info, nil
}

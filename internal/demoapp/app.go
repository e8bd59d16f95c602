package demoapp

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Schema is the application's DDL.
const Schema = `
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE user_status AS ENUM ('active', 'suspended', 'deleted');
CREATE TYPE order_status AS ENUM ('cart', 'placed', 'shipped', 'refunded');
CREATE TABLE schema_migrations (version varchar PRIMARY KEY);
CREATE TABLE users (
	id          bigserial PRIMARY KEY,
	email       citext NOT NULL UNIQUE,
	name        text NOT NULL,
	status      user_status NOT NULL DEFAULT 'active',
	settings    jsonb NOT NULL DEFAULT '{}',
	created_at  timestamptz NOT NULL DEFAULT now(),
	updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE products (
	id          serial PRIMARY KEY,
	sku         text NOT NULL UNIQUE,
	name        text NOT NULL,
	price       numeric(12,2) NOT NULL,
	tags        text[] NOT NULL DEFAULT '{}',
	thumbnail   bytea
);
CREATE TABLE orders (
	id          bigserial PRIMARY KEY,
	user_id     bigint NOT NULL REFERENCES users(id),
	status      order_status NOT NULL DEFAULT 'cart',
	total       numeric(14,2) NOT NULL DEFAULT 0,
	placed_at   timestamptz
);
CREATE INDEX orders_user_id_idx ON orders(user_id);
CREATE TABLE order_items (
	order_id    bigint NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
	product_id  int NOT NULL REFERENCES products(id),
	quantity    int NOT NULL CHECK (quantity > 0),
	unit_price  numeric(12,2) NOT NULL,
	PRIMARY KEY (order_id, product_id)
);
CREATE TABLE events (
	id          bigint GENERATED ALWAYS AS IDENTITY,
	created_at  timestamptz NOT NULL,
	user_id     bigint,
	kind        text NOT NULL,
	payload     jsonb,
	PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE TABLE audit_log (
	at          timestamptz NOT NULL DEFAULT now(),
	actor       text,
	action      text NOT NULL,
	detail      jsonb
);
CREATE TABLE documents (
	id          bigserial PRIMARY KEY,
	user_id     bigint REFERENCES users(id),
	title       text NOT NULL,
	body        text NOT NULL,
	words       int GENERATED ALWAYS AS (array_length(regexp_split_to_array(title, '\s+'), 1)) STORED
);
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
`

// Size is how much Seed writes.
type Size struct {
	Users     int // users; orders are ~3 per user, items ~2.5 per order
	Products  int
	Events    int
	Documents int // each with a ~64 KB body (TOASTed)
}

// DefaultSize seeds in a few seconds on 2 cores.
var DefaultSize = Size{Users: 20000, Products: 500, Events: 100000, Documents: 200}

// Seed creates the schema in the (empty) database at url and fills it.
func Seed(ctx context.Context, url string, sz Size) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	steps := []string{
		Schema,
		`INSERT INTO schema_migrations SELECT to_char(timestamp '2019-01-01' + g * interval '9 days', 'YYYYMMDDHH24MISS') FROM generate_series(1, 120) g`,
		fmt.Sprintf(`INSERT INTO products (sku, name, price, tags, thumbnail)
			SELECT 'SKU-' || lpad(g::text, 6, '0'), 'Product ' || g, round((random() * 200 + 1)::numeric, 2),
			       ARRAY['tag' || (g %% 7), CASE WHEN g %% 5 = 0 THEN NULL ELSE 'sale, "promo"' END],
			       decode(md5(g::text), 'hex')
			FROM generate_series(1, %d) g`, sz.Products),
		fmt.Sprintf(`INSERT INTO users (email, name, status, settings, created_at)
			SELECT 'User' || g || '@Example.com', 'User ' || g, (ARRAY['active','active','active','suspended'])[1 + g %% 4]::user_status,
			       jsonb_build_object('theme', CASE WHEN g %% 2 = 0 THEN 'dark' ELSE 'light' END, 'n', g),
			       timestamptz '2024-01-01' + g * interval '1 minute'
			FROM generate_series(1, %d) g`, sz.Users),
		`INSERT INTO orders (user_id, status, placed_at)
			SELECT u.id, (ARRAY['placed','shipped','refunded','cart'])[1 + (u.id + k) % 4]::order_status, u.created_at + k * interval '1 day'
			FROM users u, generate_series(1, 3) k`,
		fmt.Sprintf(`INSERT INTO order_items (order_id, product_id, quantity, unit_price)
			SELECT o.id, p.pid, 1 + (o.id %% 3), 9.99
			FROM orders o, LATERAL (SELECT DISTINCT 1 + ((o.id * 7 + k * 13) %% %d)::int AS pid FROM generate_series(1, 1 + (o.id %% 4)::int) k) p`, max(sz.Products, 1)),
		`UPDATE orders o SET total = s.t FROM (SELECT order_id, sum(quantity * unit_price) t FROM order_items GROUP BY 1) s WHERE s.order_id = o.id`,
		fmt.Sprintf(`INSERT INTO events (created_at, user_id, kind, payload)
			SELECT timestamptz '2025-06-01' + g * interval '7 minutes', 1 + g %% %d, (ARRAY['login','view','click','purchase'])[1 + g %% 4],
			       jsonb_build_object('i', g, 'ok', g %% 3 <> 0)
			FROM generate_series(1, %d) g`, max(sz.Users, 1), sz.Events),
		`INSERT INTO audit_log (at, actor, action, detail)
			SELECT timestamptz '2025-01-01' + g * interval '1 hour', CASE WHEN g % 10 = 0 THEN NULL ELSE 'admin' END, 'export', NULL
			FROM generate_series(1, 1000) g`,
		fmt.Sprintf(`INSERT INTO documents (user_id, title, body)
			SELECT 1 + g %% %d, 'Quarterly report ' || g, (SELECT string_agg(md5(g::text || i), ' ') FROM generate_series(1, 2000) i)
			FROM generate_series(1, %d) g`, max(sz.Users, 1), sz.Documents),
		`ANALYZE`,
	}
	for _, s := range steps {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("seed the demo app: %w", err)
		}
	}
	return nil
}

// Stats counts what Load wrote.
type Stats struct {
	Transactions atomic.Int64
	Errors       atomic.Int64
	LastError    atomic.Value // string
}

// Load writes to the app like live traffic, about tps transactions a
// second, until ctx ends: new users and orders, status changes, setting
// updates, deleted carts, events, audit rows, edits of large documents
// that leave the body untouched. It returns when ctx ends, once the
// statement in flight has committed or failed.
func Load(ctx context.Context, url string, tps int, st *Stats) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	tick := time.NewTicker(time.Second / time.Duration(max(tps, 1)))
	defer tick.Stop()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		var stmt string
		switch i % 8 {
		case 0:
			stmt = fmt.Sprintf(`WITH u AS (INSERT INTO users (email, name) VALUES ('load%d-%d@example.com', 'Load user') RETURNING id),
				o AS (INSERT INTO orders (user_id, status, placed_at) SELECT id, 'placed', now() FROM u RETURNING id)
				INSERT INTO order_items SELECT o.id, p.id, 2, 19.90 FROM o, (SELECT id FROM products ORDER BY id LIMIT 1 OFFSET %d) p`, rng.Int64(), i, rng.IntN(10))
		case 1:
			stmt = fmt.Sprintf(`UPDATE orders SET status = 'shipped' WHERE id = (SELECT id FROM orders WHERE status = 'placed' ORDER BY id DESC LIMIT 1 OFFSET %d)`, rng.IntN(20))
		case 2:
			stmt = fmt.Sprintf(`UPDATE users SET settings = settings || jsonb_build_object('seen', %d) WHERE id = %d`, i, 1+rng.IntN(1000))
		case 3:
			stmt = `DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE status = 'cart' ORDER BY id LIMIT 1)`
		case 4:
			stmt = fmt.Sprintf(`INSERT INTO events (created_at, user_id, kind, payload) VALUES (now(), %d, 'click', '{"live": true}')`, 1+rng.IntN(1000))
		case 5:
			stmt = fmt.Sprintf(`INSERT INTO audit_log (actor, action, detail) VALUES ('app', 'update', '{"i": %d}')`, i)
		case 6:
			stmt = fmt.Sprintf(`UPDATE documents SET title = 'Revised report %d' WHERE id = %d`, i, 1+rng.IntN(50))
		case 7:
			stmt = `UPDATE products SET price = price + 0.01 WHERE id = 1`
		}
		// Not cut short by ctx: a statement interrupted by the client can
		// still commit on the server after Load returned, past any WAL
		// position or count the caller reads next.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		_, err := conn.Exec(sctx, stmt)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			st.Errors.Add(1)
			st.LastError.Store(err.Error())
			continue
		}
		st.Transactions.Add(1)
	}
}

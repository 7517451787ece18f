-- The `users` connection pages by creation time: (created_at, id) is its order and its cursor
-- (created_at is fixed-width RFC 3339 text, so text order is time order; id breaks ties).
CREATE INDEX users_v1_by_creation ON users_v1 (created_at, id);

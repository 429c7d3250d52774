-- The retention of feed_fetch (feed_fetch_retention_days) deletes rows by age across all
-- feeds, hourly: without this index each run would scan the whole table.
CREATE INDEX feed_fetch_started ON feed_fetch (started_at);

-- GET /feeds/{gtfs_id}/fetches pages one feed's history newest first by id (the id grows
-- with insertion, so it is a stable cursor even when two fetches share a started_at).
CREATE INDEX feed_fetch_feed_id ON feed_fetch (gtfs_id, id DESC);

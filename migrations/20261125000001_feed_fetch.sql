-- One row per attempt to fetch a feed from an OTP instance (or a GTFS zip), written by
-- the refresh scheduler. It is the audit trail behind GET /feeds' "last error" and the
-- answer to "when did this feed last change, and how big was it?".
CREATE TABLE feed_fetch (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- instance name from the configuration ([[instances]].name)
    instance    text        NOT NULL,
    -- OTP feed id; NULL when the fetch failed before the feed was known (e.g. the
    -- instance's feed list could not be read)
    gtfs_id     text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    -- 'updated' (new version loaded), 'unchanged' (304 or same sha256), 'failed'
    outcome     text        NOT NULL CHECK (outcome IN ('updated', 'unchanged', 'failed')),
    http_status smallint,
    -- sha256 of the zip, or a hash of the route index for OTP APIs
    version     text,
    bytes       bigint CHECK (bytes >= 0),
    error       text
);

-- GET /feeds and the operators' queries look for the latest fetches of one feed.
CREATE INDEX feed_fetch_instance_feed_started ON feed_fetch (instance, gtfs_id, started_at DESC);

-- The durable feed store: every version of every feed the service fetched, so that a
-- restarted service serves its last good data even while OTP is down (issue 12).
--
-- Content is addressed by its sha256: a zip, a route index or a route detail is stored
-- once however many instances (or versions) have it. A version names its blobs; blobs no
-- version names any more are deleted by the retention (src/db/feed_store.rs), which also
-- deletes versions beyond `feed_versions_kept` per feed, except the current one and those
-- a live waybill was checked against.

-- One stored content: a GTFS zip, or the JSON of a route index or of a route detail.
CREATE TABLE feed_blob (
    -- sha256 of the whole content, lowercase hex (for a zip: the feed version itself).
    sha256     text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    -- Bytes of the whole content: the chunks' lengths add up to it.
    size       bigint      NOT NULL CHECK (size >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The content in chunks of 1 MiB (the last one shorter; an empty blob has none), so
-- that neither writing nor reading a large zip needs one huge value in one message.
CREATE TABLE feed_blob_chunk (
    sha256 text    NOT NULL REFERENCES feed_blob (sha256) ON DELETE CASCADE,
    -- 0-based, contiguous.
    seq    integer NOT NULL CHECK (seq >= 0),
    bytes  bytea   NOT NULL,
    PRIMARY KEY (sha256, seq)
);
-- Zips are compressed already: PostgreSQL need not try to compress them again (it still
-- moves large values out of line).
ALTER TABLE feed_blob_chunk ALTER COLUMN bytes SET STORAGE EXTERNAL;

-- One fetched version of one feed of one instance.
CREATE TABLE feed_version (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- instance name from the configuration ([[instances]].name)
    instance     text        NOT NULL,
    -- OTP feed id
    gtfs_id      text        NOT NULL,
    -- As GET /feeds shows it: sha256 of the zip, or of the route index for OTP feeds.
    version      text        NOT NULL,
    -- 'zip': blob is the GTFS zip. 'otp-index': blob is the JSON route index (routes and
    -- agencies) of an otp2/otp1 instance, the crawled details in feed_version_route.
    kind         text        NOT NULL CHECK (kind IN ('zip', 'otp-index')),
    blob         text        NOT NULL REFERENCES feed_blob (sha256),
    -- `otp2`, `otp1`, or the zip's URL or path, as configured when it was fetched.
    source       text        NOT NULL,
    -- When this version was (last) fetched from upstream.
    fetched_at   timestamptz NOT NULL,
    -- Validators of the zip download, so that the first refresh after a warm start can
    -- ask "has it changed?" (a 304 costs no download and no parse).
    etag          text,
    last_modified text,
    -- The counts GET /feeds shows, as JSON, for operators reading this table.
    counts       jsonb       NOT NULL,
    -- A version fetched again (the feed went back to it) is the same row, refreshed.
    UNIQUE (instance, gtfs_id, version)
);

-- The retention finds the blobs no version uses.
CREATE INDEX feed_version_blob ON feed_version (blob);

-- The crawled route details of an 'otp-index' version, one row per route.
CREATE TABLE feed_version_route (
    version_id bigint NOT NULL REFERENCES feed_version (id) ON DELETE CASCADE,
    route_id   text   NOT NULL,
    -- The JSON of the route detail (as GET /feeds/{gtfs_id}/routes/{route_id} answers it).
    blob       text   NOT NULL REFERENCES feed_blob (sha256),
    PRIMARY KEY (version_id, route_id)
);

CREATE INDEX feed_version_route_blob ON feed_version_route (blob);

-- Which version of each feed is current: the one a warm start loads. Moved in the same
-- transaction as the version's insert, so it never names a version not fully stored.
CREATE TABLE feed_current (
    instance   text        NOT NULL,
    gtfs_id    text        NOT NULL,
    -- Deleting a version (a corrupt one found at warm start) leaves its feed with none.
    version_id bigint      NOT NULL REFERENCES feed_version (id) ON DELETE CASCADE,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, gtfs_id)
);

CREATE INDEX feed_current_version ON feed_current (version_id);

-- The retention keeps a version while a waybill that is neither completed nor cancelled
-- was checked against it: this finds those waybills without scanning the whole table
-- (finished waybills, the vast majority, are not in it).
CREATE INDEX waybill_live_feed_version ON waybill (gtfs_id, feed_version)
    WHERE status NOT IN ('completed', 'cancelled');

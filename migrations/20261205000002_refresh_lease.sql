-- Replicas on one database (issue 12, part 3): per OTP instance, one replica at a time
-- refreshes from upstream. It holds that instance's lease, a row here, and renews it
-- while it lives (src/refresh/lease.rs, SQL in src/db/replicas.rs); the other replicas
-- load each new version from the feed store when the holder announces it (NOTIFY on
-- channel gtfs_fetch_feed_version, sent by the transaction that stores the version).
--
-- A lease is a row rather than an advisory lock so that operators see it (`SELECT * FROM
-- refresh_lease`) and so that it does not depend on one connection staying up: a holder
-- killed in the middle of a refresh stops renewing, its lease expires, and another
-- replica takes it over. Times are the database's clock (now()), so replicas' clocks
-- need not agree.
CREATE TABLE refresh_lease (
    -- instance name from the configuration ([[instances]].name)
    instance    text        PRIMARY KEY,
    -- replica_id of the holder (configured, or host name, pid and a random suffix)
    holder      text        NOT NULL,
    -- when this holder took the lease (kept while it renews)
    acquired_at timestamptz NOT NULL,
    -- its last renewal
    renewed_at  timestamptz NOT NULL,
    -- past this, any replica may take the lease over
    expires_at  timestamptz NOT NULL,
    CHECK (expires_at >= renewed_at)
);

-- Waybills: a vehicle's duty on one route for one service date, with the trips it runs.
-- Rules that must hold however many service instances write at once are enforced here,
-- by the database, not only by checks in the code.

-- Exclusion constraints over (text =, range &&) need btree_gist.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE waybill (
    -- UUIDv7: unguessable, and ordered by creation (list paging follows it).
    id             uuid PRIMARY KEY,
    -- The operator's own number, optional, unique when given.
    number         text UNIQUE CHECK (number <> ''),
    service_date   date        NOT NULL,
    vehicle_id     text        NOT NULL CHECK (vehicle_id <> ''),
    driver_id      text        NOT NULL CHECK (driver_id <> ''),
    gtfs_id        text        NOT NULL,
    route_id       text        NOT NULL,
    -- The feed version (sha256 of the zip) the trips were checked against.
    feed_version   text        NOT NULL,
    status         text        NOT NULL DEFAULT 'issued'
                   CHECK (status IN ('issued', 'in_progress', 'completed', 'cancelled')),
    -- From the first trip's start and the last trip's end, on the service date in the
    -- agency's time zone (GTFS times may pass 24:00:00).
    planned_start  timestamptz NOT NULL,
    planned_end    timestamptz NOT NULL,
    actual_start   timestamptz,
    actual_end     timestamptz,
    odometer_start bigint CHECK (odometer_start >= 0),
    odometer_end   bigint CHECK (odometer_end >= 0),
    notes          text,
    -- Optimistic concurrency: the ETag; every update increments it.
    version        integer     NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    planned        tstzrange GENERATED ALWAYS AS (tstzrange(planned_start, planned_end, '[)')) STORED,
    CHECK (planned_end > planned_start),
    CHECK (odometer_end IS NULL OR odometer_start IS NULL OR odometer_end >= odometer_start),
    -- A vehicle, or a driver, is never on two live duties at once.
    CONSTRAINT waybill_vehicle_overlap EXCLUDE USING gist (vehicle_id WITH =, planned WITH &&)
        WHERE (status <> 'cancelled'),
    CONSTRAINT waybill_driver_overlap EXCLUDE USING gist (driver_id WITH =, planned WITH &&)
        WHERE (status <> 'cancelled')
);

-- The list endpoint's filters.
CREATE INDEX waybill_service_date ON waybill (service_date, id);
CREATE INDEX waybill_route ON waybill (gtfs_id, route_id, service_date);

CREATE TABLE waybill_trip (
    waybill_id    uuid        NOT NULL REFERENCES waybill (id) ON DELETE CASCADE,
    -- 1-based, in time order.
    sequence      integer     NOT NULL CHECK (sequence > 0),
    trip_id       text        NOT NULL,
    -- GTFS times, seconds after the service day's start ("noon minus 12h"); may exceed 86400.
    start_seconds integer     NOT NULL,
    end_seconds   integer     NOT NULL,
    planned_start timestamptz NOT NULL,
    planned_end   timestamptz NOT NULL,
    PRIMARY KEY (waybill_id, sequence),
    UNIQUE (waybill_id, trip_id)
);

-- Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): the first answer to a key,
-- replayed for the same request, refused for another. Written in the same transaction as
-- the waybill, so a key exists exactly when its waybill does. Kept at least 24 h.
CREATE TABLE idempotency_key (
    key          text        PRIMARY KEY,
    -- sha256 of method, path and body: "the same request".
    fingerprint  text        NOT NULL,
    status_code  smallint    NOT NULL,
    response     bytea       NOT NULL,
    waybill_id   uuid REFERENCES waybill (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_key_created_at ON idempotency_key (created_at);

//! OTP 1's REST index API.

use super::*;

// ---------------------------------------------------------------------------------------
// OTP 1 REST index API
// ---------------------------------------------------------------------------------------

pub(super) type J = JsonValue;

/// A JSON object from (key, value) pairs in order, nulls left out (Jackson's NON_NULL).
pub(super) fn jobj(pairs: Vec<(&str, J)>) -> J {
    let mut map = JsonMap::new();
    for (k, v) in pairs {
        if !v.is_null() {
            map.insert(k, v);
        }
    }
    J::Object(map)
}

pub(super) fn jstr(s: &Option<String>) -> J {
    J::from(s.clone())
}

pub(super) fn otp1_json(v: J) -> Prepared {
    Prepared::json(serde_json::to_vec(&v).unwrap())
}

pub(super) fn four_zero_four() -> Prepared {
    Prepared::new(StatusCode::NOT_FOUND, "application/json", "FOUR ZERO FOUR")
}

/// `GtfsLibrary.convertIdFromString`: split at the first `:`; no `:` is an
/// IllegalArgumentException, which OTPExceptionMapper turns into a 500.
pub(super) fn otp1_id<'f>(
    feeds: &'f [Arc<Feed>],
    raw: &str,
) -> Result<Option<(&'f Feed, String)>, Prepared> {
    let id = percent_decode(raw);
    let Some((feed_id, local)) = id.split_once(':') else {
        return Err(jersey_500(&format!(
            "java.lang.IllegalArgumentException: invalid agency-and-id: {id}"
        )));
    };
    Ok(feeds
        .iter()
        .find(|f| f.id == feed_id)
        .map(|f| (&**f, local.to_owned())))
}

pub(super) fn otp1(feeds: &[Arc<Feed>], rest: &str) -> Prepared {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let (router, segs) = match segs.split_first() {
        Some((r, s)) if s.first() == Some(&"index") => (*r, &s[1..]),
        _ => return Prepared::text(StatusCode::NOT_FOUND, "HTTP 404 Not Found"),
    };
    if router != "default" {
        // OTP 1.4.0: the router lookup fails outside Jersey, Grizzly answers its own page.
        let mut p = Prepared::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/html;charset=ISO-8859-1",
            GRIZZLY_500,
        );
        p.close = true;
        return p;
    }
    // The index knows the routes of patterns only: a route without a usable trip is 404.
    let route_of = |raw: &str| -> Result<(&Feed, usize), Prepared> {
        match otp1_id(feeds, raw)? {
            Some((f, local)) => f
                .route_by_id
                .get(&local)
                .filter(|&&i| !f.routes[i].patterns.is_empty())
                .map(|&i| (f, i))
                .ok_or_else(four_zero_four),
            None => Err(four_zero_four()),
        }
    };
    let pattern_of = |raw: &str| -> Result<(&Feed, usize), Prepared> {
        let code = percent_decode(raw);
        feeds
            .iter()
            .find_map(|f| f.pattern_by_code.get(&code).map(|&i| (&**f, i)))
            .ok_or_else(four_zero_four)
    };
    let result = match segs {
        ["feeds"] => Ok(J::from(
            feeds
                .iter()
                .map(|f| J::from(f.id.clone()))
                .collect::<Vec<_>>(),
        )),
        ["agencies", feed_id] => match feeds.iter().find(|f| f.id == *feed_id) {
            Some(f) => Ok(J::from(
                f.agencies.iter().map(otp1_agency).collect::<Vec<_>>(),
            )),
            None => Ok(J::Array(vec![])),
        },
        ["routes"] => Ok(J::from(
            feeds
                .iter()
                .flat_map(|f| {
                    (0..f.routes.len())
                        .filter(|&i| !f.routes[i].patterns.is_empty())
                        .map(move |i| otp1_route_short(f, i))
                })
                .collect::<Vec<_>>(),
        )),
        ["routes", id] => route_of(id).map(|(f, i)| otp1_route(f, i)),
        ["routes", id, "patterns"] => route_of(id).map(|(f, i)| {
            J::from(
                f.routes[i]
                    .patterns
                    .iter()
                    .map(|&p| otp1_pattern_short(f, p))
                    .collect::<Vec<_>>(),
            )
        }),
        ["routes", id, "stops"] => route_of(id).map(|(f, i)| {
            J::from(
                f.route_stops(i)
                    .into_iter()
                    .map(|s| otp1_stop_short(f, s))
                    .collect::<Vec<_>>(),
            )
        }),
        ["routes", id, "trips"] => route_of(id).map(|(f, i)| {
            J::from(
                f.routes[i]
                    .patterns
                    .iter()
                    .flat_map(|&p| {
                        otp1_trip_entries(f, &f.patterns[p].trips)
                            .map(move |t| otp1_trip_short(f, t))
                    })
                    .collect::<Vec<_>>(),
            )
        }),
        ["patterns", id] => pattern_of(id).map(|(f, p)| {
            let pat = &f.patterns[p];
            jobj(vec![
                ("id", J::from(pat.code.clone())),
                ("desc", J::from(pat.name1.clone())),
                (
                    "routeId",
                    J::from(format!("{}:{}", f.id, f.routes[pat.route].id)),
                ),
                (
                    "stops",
                    J::from(
                        pat.stops
                            .iter()
                            .map(|&s| otp1_stop_short(f, s))
                            .collect::<Vec<_>>(),
                    ),
                ),
                (
                    "trips",
                    J::from(
                        otp1_trip_entries(f, &pat.trips)
                            .map(|t| otp1_trip_short(f, t))
                            .collect::<Vec<_>>(),
                    ),
                ),
            ])
        }),
        ["patterns", id, "stops"] => pattern_of(id).map(|(f, p)| {
            J::from(
                f.patterns[p]
                    .stops
                    .iter()
                    .map(|&s| otp1_stop_short(f, s))
                    .collect::<Vec<_>>(),
            )
        }),
        ["patterns", id, "trips"] => pattern_of(id).map(|(f, p)| {
            J::from(
                otp1_trip_entries(f, &f.patterns[p].trips)
                    .map(|t| otp1_trip_short(f, t))
                    .collect::<Vec<_>>(),
            )
        }),
        _ => Err(jersey_500(
            "javax.ws.rs.NotFoundException: HTTP 404 Not Found",
        )),
    };
    let mut p = match result {
        Ok(v) => otp1_json(v),
        Err(p) => p,
    };
    otp1_cors(&mut p);
    p
}

/// OTP 1's CORS filter, on every answer from Jersey.
pub(super) fn otp1_cors(p: &mut Prepared) {
    p.headers.push((
        HeaderName::from_static("access-control-allow-credentials"),
        "false".into(),
    ));
}

/// What OTPExceptionMapper makes of an exception: 500, text/plain, the exception twice
/// over (`toString` and message); Grizzly then closes the connection.
pub(super) fn jersey_500(exception: &str) -> Prepared {
    let message = exception.split_once(": ").map_or(exception, |(_, m)| m);
    let mut p = Prepared::text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{exception} {message}"),
    );
    p.close = true;
    p
}

pub(super) const GRIZZLY_500: &str = "<html><head><title>Grizzly 2.3.19</title></head><body><div class=\"header\">Request failed.</div><div class=\"body\">Request failed.</div><div class=\"footer\">Grizzly 2.3.19</div></body></html>";

/// org.opentripplanner.model.Agency through Jackson: the plain agency id, no feed.
pub(super) fn otp1_agency(a: &Agency) -> J {
    jobj(vec![
        ("id", J::from(a.id.clone())),
        ("name", J::from(a.name.clone())),
        ("url", J::from(a.url.clone())),
        ("timezone", J::from(a.timezone.clone())),
        ("lang", jstr(&a.lang)),
        ("phone", jstr(&a.phone)),
        ("fareUrl", jstr(&a.fare_url)),
    ])
}

/// index/model/RouteShort. dev-1.x has no sortOrder here; deployed 1.x servers (TriMet's,
/// in shared/fixtures/otp/1.x) send it, so it is sent when set.
pub(super) fn otp1_route_short(f: &Feed, i: usize) -> J {
    let r = &f.routes[i];
    jobj(vec![
        ("id", J::from(format!("{}:{}", f.id, r.id))),
        ("shortName", jstr(&r.short_name)),
        ("longName", jstr(&r.long_name)),
        ("mode", J::from(otp1_mode(r.route_type))),
        ("color", jstr(&r.color)),
        (
            "agencyName",
            J::from(r.agency.map(|a| f.agencies[a].name.clone())),
        ),
        ("sortOrder", J::from(r.sort_order)),
    ])
}

/// org.opentripplanner.model.Route through Jackson's getters: `sortOrder` is -999 with
/// `sortOrderSet: false` when routes.txt has none; `eligibilityRestricted` -999 likewise.
pub(super) fn otp1_route(f: &Feed, i: usize) -> J {
    let r = &f.routes[i];
    jobj(vec![
        ("id", J::from(format!("{}:{}", f.id, r.id))),
        (
            "agency",
            r.agency
                .map(|a| otp1_agency(&f.agencies[a]))
                .unwrap_or(J::Null),
        ),
        ("shortName", jstr(&r.short_name)),
        ("longName", jstr(&r.long_name)),
        ("desc", jstr(&r.desc)),
        ("type", J::from(r.route_type)),
        ("url", jstr(&r.url)),
        ("color", jstr(&r.color)),
        (
            "textColor",
            jstr(
                &r.text_color
                    .clone()
                    .or_else(|| otp1_text_color(r.color.as_deref()?)),
            ),
        ),
        ("routeBikesAllowed", J::from(0)),
        ("bikesAllowed", J::from(0)),
        (
            "sortOrder",
            J::from(r.sort_order.map(i64::from).unwrap_or(-999)),
        ),
        ("eligibilityRestricted", J::from(-999)),
        ("sortOrderSet", J::from(r.sort_order.is_some())),
    ])
}

/// OTP 1's graph builder gives a route with a colour and no text colour one
/// (`GtfsModule.generateRouteColor`): black on a bright colour, else white.
pub(super) fn otp1_text_color(color: &str) -> Option<String> {
    let rgb = u32::from_str_radix(color.trim_start_matches('#'), 16).ok()?;
    // java.awt.Color components are floats; the sum is computed in doubles.
    let c = |shift: u32| f64::from(((rgb >> shift) & 0xff) as f32 / 255.0);
    let brightness = (0.299 * c(16).powi(2) + 0.587 * c(8).powi(2) + 0.114 * c(0).powi(2)).sqrt();
    Some(if brightness > 0.5 { "000000" } else { "FFFFFF" }.to_owned())
}

pub(super) fn otp1_pattern_short(f: &Feed, p: usize) -> J {
    let pat = &f.patterns[p];
    jobj(vec![
        ("id", J::from(pat.code.clone())),
        ("desc", J::from(pat.name1.clone())),
    ])
}

/// index/model/StopShort: lat and lon are Java doubles (0.0 when missing); `cluster` is the
/// parent station's plain id.
pub(super) fn otp1_stop_short(f: &Feed, s: usize) -> J {
    let st = &f.stops[s];
    jobj(vec![
        ("id", J::from(format!("{}:{}", f.id, st.id))),
        ("code", jstr(&st.code)),
        ("name", jstr(&st.name)),
        ("lat", J::from(st.lat.unwrap_or(0.0))),
        ("lon", J::from(st.lon.unwrap_or(0.0))),
        ("url", jstr(&st.url)),
        ("cluster", jstr(&st.parent)),
    ])
}

/// A pattern's trips as OTP 1 lists them (`TripPattern.getTrips`): a frequency-based trip
/// once per frequencies.txt row, as each row adds a `FrequencyEntry` and the trip again.
pub(super) fn otp1_trip_entries<'a>(
    f: &'a Feed,
    trips: &'a [usize],
) -> impl Iterator<Item = usize> + 'a {
    trips
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t, f.trips[t].frequency_rows.max(1)))
}

/// index/model/TripShort: `serviceId` is feed-scoped, `shapeId` is not.
pub(super) fn otp1_trip_short(f: &Feed, t: usize) -> J {
    let tr = &f.trips[t];
    jobj(vec![
        ("id", J::from(format!("{}:{}", f.id, tr.id))),
        ("tripHeadsign", jstr(&tr.headsign)),
        ("serviceId", J::from(format!("{}:{}", f.id, tr.service_id))),
        ("shapeId", jstr(&tr.shape_id)),
        ("direction", J::from(tr.direction)),
    ])
}

/// `GtfsLibrary.getTraverseMode` of dev-1.x.
pub(super) fn otp1_mode(t: i32) -> &'static str {
    match t {
        100..=199 => "RAIL",
        200..=299 => "BUS",
        401..=402 => "SUBWAY",
        300..=499 => "RAIL",
        500..=699 => "SUBWAY",
        700..=899 => "BUS",
        900..=999 => "TRAM",
        1000..=1099 => "FERRY",
        1100..=1199 => "AIRPLANE",
        1200..=1299 => "FERRY",
        1300..=1399 => "GONDOLA",
        1400..=1499 => "FUNICULAR",
        1500..=1599 => "BUS",
        1600..=1699 => "CAR",
        0 => "TRAM",
        1 => "SUBWAY",
        2 => "RAIL",
        3 => "BUS",
        4 => "FERRY",
        5 => "CABLE_CAR",
        6 => "GONDOLA",
        7 => "FUNICULAR",
        // OTP 1 refuses to build a graph with any other type.
        _ => "BUS",
    }
}

/// `gtfs/mapping/TransitModeMapper` of dev-2.x, with RouteMapper's fallback to BUS.
pub(super) fn otp2_mode(t: i32) -> &'static str {
    match t {
        100..=199 => "RAIL",
        200..=299 => "COACH",
        401..=402 => "SUBWAY",
        405 => "MONORAIL",
        300..=499 => "RAIL",
        500..=699 => "SUBWAY",
        700..=799 => "BUS",
        800..=899 => "TROLLEYBUS",
        900..=999 => "TRAM",
        1000..=1099 => "FERRY",
        1100..=1199 => "AIRPLANE",
        1200..=1299 => "FERRY",
        1300..=1399 => "GONDOLA",
        1400..=1499 => "FUNICULAR",
        1551..=1560 => "CARPOOL",
        1500..=1598 => "TAXI",
        1600..=1699 => "BUS",
        0 => "TRAM",
        1 => "SUBWAY",
        2 => "RAIL",
        3 => "BUS",
        4 => "FERRY",
        5 => "CABLE_CAR",
        6 => "GONDOLA",
        7 => "FUNICULAR",
        11 => "TROLLEYBUS",
        12 => "MONORAIL",
        _ => "BUS",
    }
}

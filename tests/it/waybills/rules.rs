//! The rules of a new waybill: 422 naming the culprit, 409 for overlaps and reused numbers.

use super::*;

// ---------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_rule_is_checked_with_422_naming_the_culprit_and_nothing_is_written() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let fri = day("2018-06-01");
    let seq = cal.sequential("Lo-130", fri, 2);
    let (a, b) = (&seq[0].id, &seq[1].id);
    let (o1, o2) = cal.overlapping_pair("Lo-130", fri);
    let bullet = &cal.daytime("Bu-130", fri)[0].id;
    let bart_trip = &BART.trips[0].id;
    let weekday_only = cal.trip(a);
    assert_eq!(weekday_only.service, "mtwtf");
    assert!(!cal.runs("mtwtf", day("2018-06-02")), "Saturday");
    assert!(
        !cal.runs("mtwtf", day("2018-07-04")),
        "removed by calendar_dates"
    );
    assert!(cal.runs("mtwtf", day("2018-07-03")));
    assert!(!cal.runs("mtwtf", day("2030-06-03")), "past the calendar");

    let v = |date: &str, route: &str, trips: &[&str]| {
        wb(date, "veh-rules", "drv-rules", "caltrain", route, trips)
    };
    let mut unknown_feed = v("2018-06-01", "Lo-130", &[a]);
    unknown_feed["gtfs_id"] = json!("no-such-feed");
    let bart_route_on_caltrain = v("2018-06-01", &BART.trips[0].route, &[a]);
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("unknown feed", unknown_feed, Some("no-such-feed")),
        (
            "unknown route",
            v("2018-06-01", "No-Such-Route", &[a]),
            Some("No-Such-Route"),
        ),
        ("a route of another feed", bart_route_on_caltrain, None),
        (
            "unknown trip after a good one",
            v("2018-06-01", "Lo-130", &[a, "no-such-trip"]),
            Some("no-such-trip"),
        ),
        (
            "a trip of another feed",
            v("2018-06-01", "Lo-130", &[bart_trip]),
            Some(bart_trip),
        ),
        (
            "a trip not on the route",
            v("2018-06-01", "Lo-130", &[a, bullet]),
            Some(bullet),
        ),
        (
            "a weekday trip on a Saturday",
            v("2018-06-02", "Lo-130", &[a]),
            Some(a),
        ),
        (
            "a weekday trip on a holiday removed by calendar_dates",
            v("2018-07-04", "Lo-130", &[a, b]),
            None,
        ),
        (
            "a date past the feed's calendar",
            v("2030-06-03", "Lo-130", &[a]),
            Some(a),
        ),
        (
            "overlapping trips",
            v("2018-06-01", "Lo-130", &[&o1.id, &o2.id]),
            None,
        ),
        ("no trips", v("2018-06-01", "Lo-130", &[]), None),
        (
            "a trip twice",
            v("2018-06-01", "Lo-130", &[a, b, a]),
            Some(a),
        ),
    ];
    for (what, body, culprit) in &cases {
        let res = h.post(body).await;
        let problem = match culprit {
            Some(c) => res.problem_naming(422, c),
            None => res.problem(&[422]),
        };
        if *what == "overlapping trips" {
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains(&o1.id) || detail.contains(&o2.id),
                "{what}: the detail names a trip: {detail}"
            );
        }
        if what.contains("holiday") {
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains(a.as_str()) || detail.contains(b.as_str()),
                "{what}: the detail names a trip: {detail}"
            );
        }
        h.assert_rows(0, 0, what).await;
    }

    // Empty identifiers are the client's fault, never a 500.
    for field in ["vehicle_id", "driver_id", "number"] {
        let mut body = v("2018-06-01", "Lo-130", &[a]);
        body[field] = json!("");
        h.post(&body).await.problem(&[400, 422]);
        h.assert_rows(0, 0, &format!("empty {field}")).await;
    }

    // calendar_dates additions run: Sunday service on the 4th of July.
    assert!(cal.runs("sat_sun", day("2018-07-04")));
    let holiday = cal.sequential("Lo-130", day("2018-07-04"), 1);
    assert_eq!(holiday[0].service, "sat_sun");
    let w = h
        .create(&v("2018-07-04", "Lo-130", &[&holiday[0].id]))
        .await;
    assert_eq!(w["trips"][0]["trip_id"], holiday[0].id);
    assert!(BART.runs("SUN", day("2018-07-04")));
    let bart_sunday = BART
        .trips
        .iter()
        .filter(|t| t.service == "SUN" && t.start >= 4 * 3600 && t.end <= 23 * 3600)
        .min_by_key(|t| t.start)
        .unwrap();
    h.create(&wb(
        "2018-07-04",
        "veh-bart",
        "drv-bart",
        "bart",
        &bart_sunday.route,
        &[&bart_sunday.id],
    ))
    .await;
    h.assert_rows(2, 2, "two good ones").await;
    h.stop().await;
}

#[tokio::test]
async fn overlapping_duties_and_reused_numbers_are_409_and_cancelling_frees_the_slot() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let fri = day("2018-06-01");
    let a = cal.sequential("Lo-130", fri, 1)[0];
    let bullet = cal.overlapping_with(a, "Bu-130", fri);
    let limited = cal.overlapping_with(a, "Li-130", fri);
    // Clear of all three.
    let later = cal.first_after("Lo-130", fri, a.end.max(bullet.end).max(limited.end));

    let mut first = wb("2018-06-01", "V1", "D1", "caltrain", "Lo-130", &[&a.id]);
    first["number"] = json!("N-1");
    let w1 = h.create(&first).await;

    // The same vehicle, or the same driver, overlapping: same route or another.
    let conflicts = [
        (
            "same vehicle, other route",
            wb(
                "2018-06-01",
                "V1",
                "D2",
                "caltrain",
                "Bu-130",
                &[&bullet.id],
            ),
        ),
        (
            "same vehicle, same trip",
            wb("2018-06-01", "V1", "D3", "caltrain", "Lo-130", &[&a.id]),
        ),
        (
            "same driver, other route",
            wb(
                "2018-06-01",
                "V2",
                "D1",
                "caltrain",
                "Li-130",
                &[&limited.id],
            ),
        ),
        (
            "same driver, same trip",
            wb("2018-06-01", "V3", "D1", "caltrain", "Lo-130", &[&a.id]),
        ),
    ];
    for (what, body) in &conflicts {
        let res = h.post(body).await;
        assert_eq!(res.status, 409, "{what}: {}", res.text());
        res.problem(&[409]);
        h.assert_rows(1, 1, what).await;
    }

    // No overlap: later that day, or the same trip another day.
    let w2 = h
        .create(&wb(
            "2018-06-01",
            "V1",
            "D1",
            "caltrain",
            "Lo-130",
            &[&later.id],
        ))
        .await;
    let mon = day("2018-06-04");
    assert!(cal.runs(&a.service, mon));
    h.create(&wb(
        "2018-06-04",
        "V1",
        "D1",
        "caltrain",
        "Lo-130",
        &[&a.id],
    ))
    .await;

    // A number is used once.
    let mut reuse = wb("2018-06-04", "V9", "D9", "caltrain", "Lo-130", &[&later.id]);
    reuse["number"] = json!("N-1");
    let res = h.post(&reuse).await;
    res.problem(&[409]);
    h.assert_rows(3, 3, "reused number").await;

    // Started and completed duties still hold their slot.
    h.patch_ok(
        &id_of(&w2),
        1,
        &json!({"status": "in_progress", "odometer_start": 10}),
    )
    .await;
    let over_later = cal.overlapping_with(later, "Bu-130", fri);
    let res = h
        .post(&wb(
            "2018-06-01",
            "V1",
            "D7",
            "caltrain",
            "Bu-130",
            &[&over_later.id],
        ))
        .await;
    res.problem(&[409]);
    h.patch_ok(
        &id_of(&w2),
        2,
        &json!({"status": "completed", "odometer_end": 20}),
    )
    .await;
    let res = h
        .post(&wb(
            "2018-06-01",
            "V8",
            "D1",
            "caltrain",
            "Bu-130",
            &[&over_later.id],
        ))
        .await;
    res.problem(&[409]);
    h.assert_rows(3, 3, "slots of started and completed duties")
        .await;

    // Cancelling frees the slot, for the vehicle and for the driver.
    let cancelled = h
        .patch_ok(&id_of(&w1), 1, &json!({"status": "cancelled"}))
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    for (_, body) in &conflicts[..1] {
        h.create(body).await;
    }
    h.create(&wb(
        "2018-06-01",
        "V2",
        "D1",
        "caltrain",
        "Li-130",
        &[&limited.id],
    ))
    .await;
    h.assert_rows(5, 5, "after cancelling").await;
    h.stop().await;
}

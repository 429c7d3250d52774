//! Waybills stored, read back, listed, moved through their states and kept across a
//! restart; planned times in the agency's time zone.

use super::*;

// ---------------------------------------------------------------------------------------
// Stored, read back, listed, moved, kept across a restart
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_waybill_is_stored_read_listed_moved_through_its_states_and_kept_across_a_restart() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let date = day("2018-06-01");
    assert_eq!(date.weekday(), Weekday::Friday);
    let trips = cal.sequential("Lo-130", date, 2);
    let version = h.feed_version("caltrain").await;

    // Trips given out of order: the waybill lists them in time order.
    let mut req = wb(
        "2018-06-01",
        "train-921",
        "driver-ana",
        "caltrain",
        "Lo-130",
        &[&trips[1].id, &trips[0].id],
    );
    req["number"] = json!("WB-2018-000001");
    req["notes"] = json!("first duty of the day");
    let bytes = serde_json::to_vec(&req).unwrap();
    let t0 = Timestamp::now();
    let created = h
        .post_bytes(bytes.clone(), &[("idempotency-key", "lifecycle-1")])
        .await;
    let t1 = Timestamp::now();
    let w1 = created.created();
    check_new(
        &w1,
        &Expect {
            feed: cal,
            date,
            vehicle: "train-921",
            driver: "driver-ana",
            route: "Lo-130",
            trips: trips.clone(),
            number: Some("WB-2018-000001"),
            notes: Some("first duty of the day"),
            feed_version: &version,
        },
    );
    assert_between(&w1["created_at"], t0, t1, "created_at");
    assert_between(&w1["updated_at"], t0, t1, "updated_at");
    let id = id_of(&w1);

    // Read back and listed.
    let got = h.get_waybill(&id).await;
    assert_eq!(got.ok(), w1, "GET answers what POST answered");
    assert_eq!(got.header("etag"), Some("\"1\""));
    got.assert_phases(&["db", "total"]);
    let listed = h.list(&[]).await;
    listed.assert_phases(&["db", "total"]);
    let (rows, next) = page(&listed);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(next, None);
    assert_listed(&rows[0], &w1);

    // issued → in_progress: actual_start defaults to now.
    let t0 = Timestamp::now();
    let w2 = h
        .patch_ok(
            &id,
            1,
            &json!({"status": "in_progress", "odometer_start": 120345}),
        )
        .await;
    let t1 = Timestamp::now();
    assert_eq!(w2["status"], "in_progress", "{w2}");
    assert_eq!(w2["version"], 2, "{w2}");
    assert_eq!(w2["odometer_start"], 120345, "{w2}");
    assert_between(&w2["actual_start"], t0, t1, "default actual_start");
    assert_eq!(w2["actual_end"], Value::Null, "{w2}");
    assert_eq!(w2["odometer_end"], Value::Null, "{w2}");
    assert_eq!(w2["notes"], w1["notes"], "{w2}");
    assert_same_duty(&w1, &w2);
    let got = h.get_waybill(&id).await;
    assert_eq!(got.ok(), w2);
    assert_eq!(got.header("etag"), Some("\"2\""));

    // in_progress → completed, with an explicit end (after the start) and new notes.
    let end = ts(&w2["actual_start"]) + SignedDuration::from_mins(97);
    let w3 = h
        .patch_ok(
            &id,
            2,
            &json!({
                "status": "completed",
                "odometer_end": 120398,
                "actual_end": end.to_string(),
                "notes": "arrived on time",
            }),
        )
        .await;
    assert_eq!(w3["status"], "completed", "{w3}");
    assert_eq!(w3["version"], 3, "{w3}");
    assert_eq!(w3["odometer_start"], 120345, "{w3}");
    assert_eq!(w3["odometer_end"], 120398, "{w3}");
    assert_eq!(ts(&w3["actual_end"]), end, "{w3}");
    assert_eq!(w3["actual_start"], w2["actual_start"], "{w3}");
    assert_eq!(w3["notes"], "arrived on time", "{w3}");
    assert_same_duty(&w2, &w3);

    // Another service on the same database finds it as it was.
    let h = h.restart().await;
    let got = h.get_waybill(&id).await;
    assert_eq!(got.ok(), w3, "after a restart");
    assert_eq!(got.header("etag"), Some("\"3\""));
    let rows = h.all_rows().await;
    assert_eq!(rows.len(), 1);
    assert_listed(&rows[0], &w3);

    // The key's stored answer survives too: the first answer again, no new row.
    let replay = h
        .post_bytes(bytes, &[("idempotency-key", "lifecycle-1")])
        .await;
    assert_eq!(replay.status, 201, "{}", replay.text());
    assert_eq!(replay.json(), w1, "the stored answer of the key");
    h.assert_rows(1, 2, "after the replay").await;
    h.stop().await;
}

#[tokio::test]
async fn planned_times_follow_the_agency_time_zone_past_midnight_and_across_dst() {
    let h = Harness::start(&[]).await;
    let (cal, bart) = (&*CALTRAIN, &*BART);
    let cal_version = h.feed_version("caltrain").await;
    let bart_version = h.feed_version("bart").await;

    // The test's own arithmetic, pinned: noon minus 12 h in Los Angeles.
    assert_eq!(
        cal.origin(day("2018-06-01")).to_string(),
        "2018-06-01T07:00:00Z"
    );
    assert_eq!(
        cal.origin(day("2018-03-11")).to_string(),
        "2018-03-11T07:00:00Z"
    );
    assert_eq!(
        cal.origin(day("2018-11-04")).to_string(),
        "2018-11-04T08:00:00Z"
    );

    // Spring forward and fall back: Sunday service, daytime trips.
    for (i, date) in ["2018-03-11", "2018-11-04"].into_iter().enumerate() {
        let d = day(date);
        assert_eq!(d.weekday(), Weekday::Sunday);
        let trips = cal.sequential("Lo-130", d, 2);
        let vehicle = format!("dst-v{i}");
        let driver = format!("dst-d{i}");
        let w = h
            .create(&wb(
                date,
                &vehicle,
                &driver,
                "caltrain",
                "Lo-130",
                &[&trips[0].id, &trips[1].id],
            ))
            .await;
        check_new(
            &w,
            &Expect {
                feed: cal,
                date: d,
                vehicle: &vehicle,
                driver: &driver,
                route: "Lo-130",
                trips,
                number: None,
                notes: None,
                feed_version: &cal_version,
            },
        );
    }

    // BART: a trip that ends after midnight, and one that starts after midnight.
    let d = day("2018-06-01");
    let on_day: Vec<&Trip> = bart
        .trips
        .iter()
        .filter(|t| bart.runs(&t.service, d))
        .collect();
    let crossing = on_day
        .iter()
        .find(|t| t.start < 86400 && t.end > 86400)
        .expect("a bart trip across midnight on 2018-06-01");
    let late = on_day
        .iter()
        .find(|t| t.start >= 86400)
        .expect("a bart trip after midnight on 2018-06-01");
    for (i, t) in [crossing, late].into_iter().enumerate() {
        let vehicle = format!("night-v{i}");
        let driver = format!("night-d{i}");
        let w = h
            .create(&wb(
                "2018-06-01",
                &vehicle,
                &driver,
                "bart",
                &t.route,
                &[&t.id],
            ))
            .await;
        check_new(
            &w,
            &Expect {
                feed: bart,
                date: d,
                vehicle: &vehicle,
                driver: &driver,
                route: &t.route,
                trips: vec![*t],
                number: None,
                notes: None,
                feed_version: &bart_version,
            },
        );
        assert!(
            w["planned_end"]
                .as_str()
                .unwrap()
                .starts_with("2018-06-02T"),
            "{} ends {} on the next calendar day: {w}",
            t.id,
            format_gtfs_time(t.end)
        );
    }
    h.stop().await;
}

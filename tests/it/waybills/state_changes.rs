//! Status changes: `If-Match` and the state machine; readings that contradict each other.

use super::*;

#[tokio::test]
async fn patch_needs_if_match_and_follows_the_state_machine() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let fri = day("2018-06-01");
    let trips = cal.sequential("Lo-130", fri, 3);
    let new = |i: usize| {
        wb(
            "2018-06-01",
            &format!("sm-v{i}"),
            &format!("sm-d{i}"),
            "caltrain",
            "Lo-130",
            &[&trips[i].id],
        )
    };
    let w = h.create(&new(0)).await;
    let id = id_of(&w);

    let start = json!({"status": "in_progress", "odometer_start": 1000});
    h.patch(&id, None, &start).await.problem(&[428]);
    h.patch(&id, Some(7), &start).await.problem(&[412]);
    h.patch(&id, Some(0), &start).await.problem(&[412]);
    unchanged(&h, id.clone(), w.clone()).await;

    // issued → completed is not a move.
    h.patch(
        &id,
        Some(1),
        &json!({"status": "completed", "odometer_end": 5}),
    )
    .await
    .problem(&[409]);
    // issued → in_progress needs odometer_start.
    h.patch(&id, Some(1), &json!({"status": "in_progress"}))
        .await
        .problem(&[422]);
    unchanged(&h, id.clone(), w.clone()).await;

    let w2 = h
        .patch_ok(
            &id,
            1,
            &json!({"status": "in_progress", "odometer_start": 1000, "actual_start": "2018-06-01T11:20:00Z"}),
        )
        .await;
    assert_eq!(w2["version"], 2);
    assert_eq!(
        ts(&w2["actual_start"]).to_string(),
        "2018-06-01T11:20:00Z",
        "{w2}"
    );
    // The old version is stale now.
    h.patch(&id, Some(1), &json!({"status": "cancelled"}))
        .await
        .problem(&[412]);
    h.patch(&id, Some(2), &start).await.problem(&[409]);
    h.patch(&id, Some(2), &json!({"status": "completed"}))
        .await
        .problem(&[422]);
    h.patch(
        &id,
        Some(2),
        &json!({"status": "completed", "odometer_end": 999}),
    )
    .await
    .problem(&[422]);
    unchanged(&h, id.clone(), w2.clone()).await;

    let t0 = Timestamp::now();
    let w3 = h
        .patch_ok(
            &id,
            2,
            &json!({"status": "completed", "odometer_end": 1000}),
        )
        .await;
    let t1 = Timestamp::now();
    assert_eq!(w3["status"], "completed");
    assert_eq!(w3["odometer_end"], 1000, "equal odometers are fine");
    assert_between(&w3["actual_end"], t0, t1, "default actual_end");
    assert_eq!(w3["actual_start"], w2["actual_start"]);
    for body in [
        json!({"status": "cancelled"}),
        json!({"status": "in_progress", "odometer_start": 1}),
        json!({"status": "completed", "odometer_end": 2000}),
    ] {
        h.patch(&id, Some(3), &body).await.problem(&[409]);
    }
    unchanged(&h, id.clone(), w3.clone()).await;

    // issued → cancelled; then nothing.
    let c = h.create(&new(1)).await;
    let cid = id_of(&c);
    let c2 = h.patch_ok(&cid, 1, &json!({"status": "cancelled"})).await;
    assert_eq!(c2["status"], "cancelled");
    for body in [
        json!({"status": "cancelled"}),
        json!({"status": "in_progress", "odometer_start": 1}),
        json!({"status": "completed", "odometer_end": 2000}),
    ] {
        h.patch(&cid, Some(2), &body).await.problem(&[409]);
    }
    unchanged(&h, cid, c2).await;

    // in_progress → cancelled.
    let p = h.create(&new(2)).await;
    let pid = id_of(&p);
    h.patch_ok(
        &pid,
        1,
        &json!({"status": "in_progress", "odometer_start": 0}),
    )
    .await;
    let p3 = h
        .patch_ok(
            &pid,
            2,
            &json!({"status": "cancelled", "notes": "breakdown"}),
        )
        .await;
    assert_eq!(p3["status"], "cancelled");
    assert_eq!(p3["notes"], "breakdown");
    assert_eq!(p3["version"], 3);

    // Unknown and malformed ids.
    let ghost = uuid::Uuid::new_v4().to_string();
    h.patch(&ghost, Some(1), &json!({"status": "cancelled"}))
        .await
        .problem(&[404]);
    h.get_waybill(&ghost).await.problem(&[404]);
    h.get_waybill("not-a-uuid").await.problem(&[400, 404]);
    h.get_waybill("123").await.problem(&[400, 404]);
    h.assert_rows(3, 3, "state machine").await;
    h.stop().await;
}

/// Found by schemathesis (scripts/schemathesis.sh): a move whose readings contradict each
/// other, or the stored ones (`odometer_end` below `odometer_start` while starting or
/// cancelling), reached the database's CHECK and came back as 500. Whatever the move, such
/// readings are a 422 naming them, and nothing changes.
#[tokio::test]
async fn readings_that_contradict_each_other_are_422_whatever_the_move() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let trip = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let w = h
        .create(&wb(
            "2018-06-01",
            "rd-v",
            "rd-d",
            "caltrain",
            "Lo-130",
            &[&trip.id],
        ))
        .await;
    let id = id_of(&w);
    for (body, named) in [
        // The request schemathesis sent, shrunk.
        (
            json!({"status": "in_progress", "odometer_start": 1, "odometer_end": 0.0}),
            "odometer_end",
        ),
        (
            json!({"status": "in_progress", "odometer_start": 1,
                   "actual_start": "2018-06-01T12:00:00Z", "actual_end": "2018-06-01T11:59:59Z"}),
            "actual_end",
        ),
        (
            json!({"status": "cancelled", "odometer_start": 10, "odometer_end": 9}),
            "odometer_end",
        ),
    ] {
        h.patch(&id, Some(1), &body)
            .await
            .problem_naming(422, named);
    }
    unchanged(&h, id.clone(), w.clone()).await;

    // Against what is stored: started at 100 km and at 12:00, then cancelled with an end
    // below either.
    let started = h
        .patch_ok(
            &id,
            1,
            &json!({"status": "in_progress", "odometer_start": 100, "actual_start": "2018-06-01T12:00:00Z"}),
        )
        .await;
    for (body, named) in [
        (
            json!({"status": "cancelled", "odometer_end": 99}),
            "odometer_end",
        ),
        (
            json!({"status": "cancelled", "actual_end": "2018-06-01T11:00:00Z"}),
            "actual_end",
        ),
        (
            json!({"status": "completed", "odometer_end": 100, "actual_end": "2018-06-01T11:00:00Z"}),
            "actual_end",
        ),
    ] {
        h.patch(&id, Some(2), &body)
            .await
            .problem_naming(422, named);
    }
    unchanged(&h, id.clone(), started).await;
    let cancelled = h
        .patch_ok(&id, 2, &json!({"status": "cancelled", "odometer_end": 100}))
        .await;
    assert_eq!(cancelled["odometer_end"], 100, "{cancelled}");
    h.stop().await;
}

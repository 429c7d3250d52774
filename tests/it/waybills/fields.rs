//! Text fields: lengths, character rules, NUL characters.

use super::*;

#[tokio::test]
async fn every_text_field_has_the_documented_length_and_character_rule() {
    use gtfs_fetch::waybill::limits;
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let a = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let good = wb(
        "2018-06-01",
        "len-v",
        "len-d",
        "caltrain",
        "Lo-130",
        &[&a.id],
    );
    let long = |n: usize| "x".repeat(n);
    let mut cases: Vec<(&str, Value)> = vec![
        ("vehicle_id", json!(long(limits::ID + 1))),
        ("driver_id", json!(long(limits::ID + 1))),
        ("number", json!(long(limits::ID + 1))),
        ("vehicle_id", json!("bus\u{1}17")),
        ("driver_id", json!("d\u{7f}")),
        ("number", json!("  ")),
        ("route_id", json!(long(limits::GTFS_ID + 1))),
        ("gtfs_id", json!(long(limits::GTFS_ID + 1))),
        ("trip_ids[0]", json!([long(limits::GTFS_ID + 1)])),
        ("trip_ids", json!(vec!["t"; limits::TRIPS + 1])),
        ("notes", json!(long(limits::NOTES + 1))),
    ];
    // 200,000 characters, as a careless client sent.
    cases.push(("vehicle_id", json!(long(200_000))));
    for (field, value) in cases {
        let mut body = good.clone();
        let key = field.split('[').next().unwrap();
        body[key] = value;
        h.post(&body).await.problem_naming(422, field);
    }
    h.assert_rows(0, 0, "nothing written").await;
    // At the limits, and with text the rule allows (accents, spaces inside, newlines in notes).
    let mut body = good.clone();
    body["vehicle_id"] = json!("é".repeat(limits::ID));
    body["driver_id"] = json!("driver 42");
    body["number"] = json!(long(limits::ID));
    body["notes"] = json!(format!("line 1\n{}", long(limits::NOTES - 7)));
    let w = h.post(&body).await.created();
    let id = id_of(&w);
    h.patch(
        &id,
        Some(1),
        &json!({"status": "cancelled", "notes": long(limits::NOTES + 1)}),
    )
    .await
    .problem_naming(422, "notes");
    h.list(&[("vehicle_id", &long(limits::ID + 1))])
        .await
        .problem_naming(400, "vehicle_id");
    h.stop().await;
}

#[tokio::test]
async fn nul_characters_are_refused_by_field_and_if_match_star_and_empty_cursor_work() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let a = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let good = wb(
        "2018-06-01",
        "nul-v",
        "nul-d",
        "caltrain",
        "Lo-130",
        &[&a.id],
    );
    for field in ["notes", "vehicle_id", "number", "driver_id"] {
        let mut body = good.clone();
        body[field] = json!("a\u{0}b");
        h.post(&body).await.problem_naming(422, field);
    }
    h.assert_rows(0, 0, "nothing written").await;
    // `%00` in a query parameter.
    h.list(&[("vehicle_id", "a\u{0}")])
        .await
        .problem_naming(400, "vehicle_id");
    // An empty cursor is the first page.
    let w = h.post(&good).await.created();
    let id = id_of(&w);
    let (rows, _) = page(&h.list(&[("cursor", "")]).await);
    assert_eq!(rows.len(), 1);
    // PATCH: a NUL in notes is refused and changes nothing; `If-Match: *` matches any version.
    h.patch(
        &id,
        Some(1),
        &json!({"status": "cancelled", "notes": "x\u{0}"}),
    )
    .await
    .problem_naming(422, "notes");
    let res = h
        .send(
            Method::PATCH,
            &format!("/waybills/{id}"),
            &[("content-type", "application/json"), ("if-match", "*")],
            Some(br#"{"status":"cancelled"}"#.to_vec()),
        )
        .await;
    let changed = res.ok();
    assert_eq!(changed["status"], "cancelled", "{changed}");
    assert_eq!(changed["version"], 2, "{changed}");
    h.stop().await;
}

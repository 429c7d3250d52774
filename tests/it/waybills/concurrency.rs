//! Concurrent writes: one key, one row; one slot, one 201; one version, one 200.

use super::*;

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

/// POSTs every `(body, key)` at once: (status, body) each.
async fn all_at_once(h: &Harness, requests: Vec<(Value, Option<String>)>) -> Vec<(u16, Value)> {
    let token = h.token.as_deref();
    let requests = requests
        .iter()
        .map(|(body, key)| h.app.waybill_request(body, key.as_deref(), token))
        .collect();
    crate::support::http::all_at_once(requests).await
}

#[tokio::test]
async fn a_hundred_concurrent_posts_with_one_key_make_one_row() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let trips = cal.sequential("Li-130", day("2018-06-01"), 2);
    let body = wb(
        "2018-06-01",
        "key-v",
        "key-d",
        "caltrain",
        "Li-130",
        &[&trips[0].id, &trips[1].id],
    );
    let answers = all_at_once(
        &h,
        (0..100)
            .map(|_| (body.clone(), Some("one-key-for-all".to_owned())))
            .collect(),
    )
    .await;
    let mut created: Vec<&Value> = Vec::new();
    let mut in_flight = 0;
    for (status, b) in &answers {
        match status {
            201 => created.push(b),
            409 => in_flight += 1,
            other => panic!("only 201 (the answer) or 409 (in flight) allowed, got {other}: {b}"),
        }
    }
    assert!(!created.is_empty(), "no 201 among {answers:?}");
    assert!(
        created.iter().all(|b| *b == created[0]),
        "every 201 is the same answer, with the same id"
    );
    eprintln!(
        "100 posts with one key: {} × 201, {in_flight} × 409",
        created.len()
    );
    h.assert_rows(1, 2, "100 posts, one key").await;
    let w = created[0].clone();

    // Later, the stored answer again.
    let replay = h.post_key(&body, "one-key-for-all").await;
    assert_eq!(replay.status, 201, "{}", replay.text());
    assert_eq!(replay.json(), w);
    // The same request written another way (keys in another order, other whitespace) is
    // the same request: the stored answer, not 422.
    let mut pairs: Vec<(String, Value)> = body
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pairs.reverse();
    let reordered = format!(
        "{{\n  {}\n}}",
        pairs
            .iter()
            .map(|(k, v)| format!(
                "{} :  {}",
                json!(k),
                serde_json::to_string_pretty(v).unwrap()
            ))
            .collect::<Vec<_>>()
            .join(",\n  ")
    );
    assert_ne!(reordered.as_bytes(), serde_json::to_vec(&body).unwrap());
    let replay = h
        .post_bytes(
            reordered.into_bytes(),
            &[("idempotency-key", "one-key-for-all")],
        )
        .await;
    assert_eq!(replay.status, 201, "{}", replay.text());
    assert_eq!(replay.json(), w);
    // Same key, another body: refused, nothing written.
    let mut other = body.clone();
    other["notes"] = json!("changed my mind");
    h.post_key(&other, "one-key-for-all").await.problem(&[422]);
    // The same body without the key, or with another, is a new request: an overlap.
    h.post(&body).await.problem(&[409]);
    h.post_key(&body, "another-key").await.problem(&[409]);
    h.assert_rows(1, 2, "after replays").await;
    let got = h.get_waybill(&id_of(&w)).await;
    assert_eq!(got.ok(), w);
    h.stop().await;
}

#[tokio::test]
async fn two_concurrent_overlapping_waybills_for_one_vehicle_driver_or_number_give_one_201() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let fri = day("2018-06-01");
    let a = cal.sequential("Lo-130", fri, 1)[0];
    let x = cal.overlapping_with(a, "Bu-130", fri);
    let rounds = 15;
    for r in 0..rounds {
        // One vehicle, two drivers; then one driver, two vehicles.
        let pairs = [
            (
                wb(
                    "2018-06-01",
                    &format!("rv{r}"),
                    &format!("rd{r}a"),
                    "caltrain",
                    "Lo-130",
                    &[&a.id],
                ),
                wb(
                    "2018-06-01",
                    &format!("rv{r}"),
                    &format!("rd{r}b"),
                    "caltrain",
                    "Bu-130",
                    &[&x.id],
                ),
            ),
            (
                wb(
                    "2018-06-01",
                    &format!("sv{r}a"),
                    &format!("sd{r}"),
                    "caltrain",
                    "Lo-130",
                    &[&a.id],
                ),
                wb(
                    "2018-06-01",
                    &format!("sv{r}b"),
                    &format!("sd{r}"),
                    "caltrain",
                    "Bu-130",
                    &[&x.id],
                ),
            ),
        ];
        // And one number for two duties that do not overlap at all.
        let mut n1 = wb(
            "2018-06-04",
            &format!("nv{r}a"),
            &format!("nd{r}a"),
            "caltrain",
            "Lo-130",
            &[&a.id],
        );
        n1["number"] = json!(format!("race-{r}"));
        let mut n2 = wb(
            "2018-06-04",
            &format!("nv{r}b"),
            &format!("nd{r}b"),
            "caltrain",
            "Lo-130",
            &[&a.id],
        );
        n2["number"] = json!(format!("race-{r}"));
        for (p, q) in pairs.into_iter().chain([(n1, n2)]) {
            let answers = all_at_once(&h, vec![(p, None), (q, None)]).await;
            let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
            statuses.sort();
            assert_eq!(statuses, vec![201, 409], "round {r}: {answers:?}");
        }
    }
    h.assert_rows(3 * rounds, 3 * rounds, "one per round and kind")
        .await;
    let pool = &h.app.state.db.pool;
    for r in 0..rounds {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM waybill WHERE vehicle_id = $1")
            .bind(format!("rv{r}"))
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "vehicle rv{r}");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM waybill WHERE driver_id = $1")
            .bind(format!("sd{r}"))
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "driver sd{r}");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM waybill WHERE number = $1")
            .bind(format!("race-{r}"))
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "number race-{r}");
    }
    h.stop().await;
}

#[tokio::test]
async fn concurrent_patches_with_one_version_give_exactly_one_200() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let a = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let w = h
        .create(&wb(
            "2018-06-01",
            "pv",
            "pd",
            "caltrain",
            "Lo-130",
            &[&a.id],
        ))
        .await;
    let id = id_of(&w);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (client, url, barrier) = (
                h.app.client.clone(),
                h.app.url(&format!("/waybills/{id}")),
                barrier.clone(),
            );
            tokio::spawn(async move {
                let req = client
                    .patch(url)
                    .header("content-type", "application/json")
                    .header("if-match", "\"1\"")
                    .body(json!({"status": "in_progress", "odometer_start": i}).to_string());
                barrier.wait().await;
                let res = req.send().await.unwrap();
                (res.status().as_u16(), res.text().await.unwrap())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let stale = statuses.iter().filter(|(s, _)| *s == 412).count();
    assert_eq!(
        (ok, stale),
        (1, 19),
        "one winner, the others stale: {statuses:?}"
    );
    let got = h.get_waybill(&id).await.ok();
    assert_eq!(got["version"], 2, "{got}");
    assert_eq!(got["status"], "in_progress", "{got}");
    h.stop().await;
}

//! Authentication: the API token, and its place before the body.

use super::*;

#[tokio::test]
async fn authentication_comes_before_the_body_and_the_scheme_is_any_case() {
    let h = Harness::start(&[("GTFS_API_TOKEN", "s3cret-token")]).await;
    // Without the token, every body gets the same 401: nothing about the schema.
    for (body, ctype) in [
        (&b"{}"[..], "application/json"),
        (b"not json", "application/json"),
        (br#"{"service_date": 7}"#, "application/json"),
        (b"{}", "text/plain"),
    ] {
        for auth in ["", "Bearer wrong"] {
            let res = h
                .post_bytes(
                    body.to_vec(),
                    &[("authorization", auth), ("content-type", ctype)],
                )
                .await;
            let problem = res.problem(&[401]);
            let detail = problem["detail"].as_str().unwrap_or_default();
            assert!(
                !detail.contains("service_date") && !detail.contains("field"),
                "{problem}"
            );
        }
    }
    let res = h
        .send(
            Method::PATCH,
            &format!("/waybills/{}", uuid::Uuid::new_v4()),
            &[("authorization", ""), ("content-type", "application/json")],
            Some(b"{".to_vec()),
        )
        .await;
    res.problem(&[401]);
    h.assert_rows(0, 0, "nothing written").await;
    // RFC 9110: the scheme is case-insensitive.
    let cal = &*CALTRAIN;
    for (i, scheme) in ["bearer", "BEARER"].into_iter().enumerate() {
        let a = cal.sequential("Lo-130", day("2018-06-01"), 2)[i];
        let body = serde_json::to_vec(&wb(
            "2018-06-01",
            &format!("case-v{i}"),
            &format!("case-d{i}"),
            "caltrain",
            "Lo-130",
            &[&a.id],
        ))
        .unwrap();
        let auth = format!("{scheme} s3cret-token");
        h.post_bytes(body, &[("authorization", &auth)])
            .await
            .created();
    }
    h.stop().await;
}

#[tokio::test]
async fn writes_need_the_api_token_when_one_is_set() {
    let h = Harness::start(&[("GTFS_API_TOKEN", "s3cret-token")]).await;
    let cal = &*CALTRAIN;
    let a = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let body = serde_json::to_vec(&wb(
        "2018-06-01",
        "tok-v",
        "tok-d",
        "caltrain",
        "Lo-130",
        &[&a.id],
    ))
    .unwrap();
    for auth in [
        "",
        "Bearer wrong",
        "Bearer ",
        "Basic czNjcmV0LXRva2Vu",
        "s3cret-token",
    ] {
        let res = h.post_bytes(body.clone(), &[("authorization", auth)]).await;
        res.problem(&[401]);
        h.assert_rows(0, 0, &format!("Authorization {auth:?}"))
            .await;
    }
    let w = h.post_bytes(body, &[]).await.created();
    let id = id_of(&w);
    for auth in ["", "Bearer wrong"] {
        let res = h
            .send(
                Method::PATCH,
                &format!("/waybills/{id}"),
                &[
                    ("authorization", auth),
                    ("content-type", "application/json"),
                    ("if-match", "\"1\""),
                ],
                Some(br#"{"status":"cancelled"}"#.to_vec()),
            )
            .await;
        res.problem(&[401]);
    }
    // Reads are open.
    let got = h
        .send(
            Method::GET,
            &format!("/waybills/{id}"),
            &[("authorization", "")],
            None,
        )
        .await;
    assert_eq!(got.ok(), w, "unchanged");
    let list = h
        .send(Method::GET, "/waybills", &[("authorization", "")], None)
        .await;
    assert_eq!(page(&list).0.len(), 1);
    h.patch_ok(&id, 1, &json!({"status": "cancelled"})).await;
    h.stop().await;
}

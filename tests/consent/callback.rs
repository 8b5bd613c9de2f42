//! WeChat's message push: signatures, each push applied once, secure and compatible mode.

use super::*;

#[tokio::test]
async fn the_callback_checks_signatures_and_applies_each_push_once() {
    let alice = "oAlice0000000000000000000001";
    let env = consent_env(&format!(
        "{}{}{}",
        intake(""),
        once_job("remind", ""),
        listed("remind", &[alice])
    ))
    .await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    let url = format!("http://{}/wechat/callback", env.http);

    // The console's URL check: echostr only with a good signature.
    let good = format!("{}&echostr=e-12345", signed("1514711492"));
    let r = reqwest::get(format!("{url}?{good}")).await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "e-12345".into())
    );
    let forged = good.replace("signature=", "signature=0");
    let r = reqwest::get(format!("{url}?{forged}")).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(!r.text().await.unwrap().contains("e-12345"));

    // JSON popup event, one entry as an object; WeChat retries it twice more.
    let popup = format!(
        r#"{{"ToUserName":"gh_1","FromUserName":"{alice}","CreateTime":1700000000,"MsgType":"event",
            "Event":"subscribe_msg_popup_event","List":{{"TemplateId":"{ONCE}","SubscribeStatusString":"accept","PopupScene":"0"}}}}"#
    );
    for _ in 0..3 {
        assert_eq!(
            push(env.http, &signed("77"), &popup).await,
            (200, "success".into())
        );
    }
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));

    // A forged push changes nothing.
    let (status, _) = push(
        env.http,
        &signed("77").replace("nonce=77", "nonce=78"),
        &popup,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));

    // A genuine signature from an hour ago is not honoured: in plaintext mode it
    // does not cover the body, so it could carry a forged one.
    let stale = popup.replace("1700000000", "1700000050");
    assert_eq!(push(env.http, &signed_at(3600, "8"), &stale).await.0, 403);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));

    // XML popup with two acceptances in a List array: two more credits.
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[{alice}]]></FromUserName>\
         <CreateTime>1700000100</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent>\
         <List><TemplateId><![CDATA[{ONCE}]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>0</PopupScene></List>\
         <List><TemplateId><![CDATA[tmpl-checkin]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>0</PopupScene></List>\
         </SubscribeMsgPopupEvent></xml>"
    );
    assert_eq!(push(env.http, &signed("5"), &xml).await.0, 200);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 2)));
    assert_eq!(
        consent(&env, alice, "tmpl-checkin").await,
        Some(("accept".into(), 1))
    );

    // Send once (uses one credit), then WeChat reports that message's final result.
    env.fake.subscribe(alice, ONCE, 2);
    let run = env.wxpush(&["send", "remind", "--again"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));
    let store = env.store().await;
    let msgid = store.deliveries(1).await.unwrap()[0].msgid.clone().unwrap();
    store.close().await;
    let sent = format!(
        r#"{{"ToUserName":"gh_1","FromUserName":"{alice}","CreateTime":"1700000200","MsgType":"event",
            "Event":"subscribe_msg_sent_event","List":{{"TemplateId":"{ONCE}","MsgID":"{msgid}","ErrorCode":"10002","ErrorStatus":"push fail"}}}}"#
    );
    assert_eq!(push(env.http, &signed("9"), &sent).await.0, 200);
    let shown = env.wxpush(&["runs", "show", "1"]).await;
    assert!(shown.stdout.contains("10002 push fail"), "{}", shown.stdout);

    // A forged XML push changes nothing either.
    let forged_xml = format!(
        "<xml><FromUserName>{alice}</FromUserName><CreateTime>1700000250</CreateTime><MsgType>event</MsgType>\
         <Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><TemplateId>{ONCE}</TemplateId>\
         <SubscribeStatusString>accept</SubscribeStatusString></List></SubscribeMsgPopupEvent></xml>"
    );
    let (status, _) = push(env.http, "signature=abc&timestamp=1&nonce=2", &forged_xml).await;
    assert_eq!(status, 403);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("accept".into(), 1)));

    // The user cancels in settings (XML change event): no credits left.
    let change = format!(
        "<xml><FromUserName>{alice}</FromUserName><CreateTime>1700000300</CreateTime><MsgType>event</MsgType>\
         <Event>subscribe_msg_change_event</Event><SubscribeMsgChangeEvent><List><TemplateId>{ONCE}</TemplateId>\
         <SubscribeStatusString>reject</SubscribeStatusString></List></SubscribeMsgChangeEvent></xml>"
    );
    assert_eq!(push(env.http, &signed("3"), &change).await.0, 200);
    assert_eq!(consent(&env, alice, ONCE).await, Some(("reject".into(), 0)));

    // An unreadable push is refused so that WeChat retries it.
    assert_eq!(push(env.http, &signed("2"), "<xml><Fro").await.0, 400);
    stop(&mut child).await;
}

#[tokio::test]
async fn applied_push_keys_are_remembered_until_pruned() {
    let store = wxpush::storage::Store::open("sqlite::memory:")
        .await
        .unwrap();
    let accept = wxpush::domain::ConsentResult::Accept;
    assert!(
        store
            .apply_consent_event(
                &appid(APPID),
                "k1",
                &oid("oU00000000000000000000000001"),
                &tmpl(ONCE),
                accept
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .apply_consent_event(
                &appid(APPID),
                "k1",
                &oid("oU00000000000000000000000001"),
                &tmpl(ONCE),
                accept
            )
            .await
            .unwrap()
    );
    let week_ago = chrono::Utc::now() - chrono::TimeDelta::days(7);
    assert_eq!(store.prune_consent_events(week_ago).await.unwrap(), 0);
    let later = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    assert_eq!(store.prune_consent_events(later).await.unwrap(), 1);
    assert!(
        store
            .apply_consent_event(
                &appid(APPID),
                "k1",
                &oid("oU00000000000000000000000001"),
                &tmpl(ONCE),
                accept
            )
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn secure_mode_pushes_are_checked_and_opened_and_compatible_mode_too() {
    const AES_KEY: &str = "kLmN0pQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQ";
    let bob = "oBob000000000000000000000001";
    let env = consent_env(&format!(
        "{}{}{}",
        intake(&format!("encoding_aes_key = \"{AES_KEY}\"")),
        once_job("remind", ""),
        listed("remind", &[bob])
    ))
    .await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;

    let popup = format!(
        r#"{{"ToUserName":"gh_1","FromUserName":"{bob}","CreateTime":1700000200,"MsgType":"event",
            "Event":"subscribe_msg_popup_event","List":{{"TemplateId":"{ONCE}","SubscribeStatusString":"accept","PopupScene":"0"}}}}"#
    );
    let encrypt = fake_wechat::encrypt_push(AES_KEY, APPID, &popup, [7; 16]);
    let query = |nonce: &str, encrypt: &str| {
        let q = signed(nonce);
        let timestamp = q
            .split("timestamp=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        let msg_sig = wxpush::intake::sign_encrypted(CALLBACK_TOKEN, timestamp, nonce, encrypt);
        format!("{q}&encrypt_type=aes&msg_signature={msg_sig}")
    };
    let envelope = json!({ "ToUserName": "gh_1", "Encrypt": encrypt }).to_string();

    // A ciphertext that msg_signature does not cover is refused, nothing stored.
    let forged = fake_wechat::encrypt_push(AES_KEY, APPID, &popup, [8; 16]);
    let forged_body = json!({ "ToUserName": "gh_1", "Encrypt": forged }).to_string();
    assert_eq!(
        push(env.http, &query("31", &encrypt), &forged_body).await.0,
        403
    );
    assert_eq!(consent(&env, bob, ONCE).await, None);

    // Another mini program's push, even well signed, is not applied.
    let elsewhere = fake_wechat::encrypt_push(AES_KEY, "wx99999999999999ff", &popup, [7; 16]);
    let elsewhere_body = json!({ "ToUserName": "gh_1", "Encrypt": elsewhere }).to_string();
    let (status, text) = push(env.http, &query("32", &elsewhere), &elsewhere_body).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("wx99999999999999ff"), "{text}");
    assert_eq!(consent(&env, bob, ONCE).await, None);

    // The genuine push, retried: applied once.
    for nonce in ["33", "34"] {
        assert_eq!(
            push(env.http, &query(nonce, &encrypt), &envelope).await,
            (200, "success".into())
        );
    }
    assert_eq!(consent(&env, bob, ONCE).await, Some(("accept".into(), 1)));

    // Compatible mode, XML: the plaintext fields sit beside Encrypt, and only the
    // signed ciphertext counts. The plaintext here claims "accept"; the cipher says reject.
    let change = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[{bob}]]></FromUserName>\
         <CreateTime>1700000300</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[subscribe_msg_change_event]]></Event><SubscribeMsgChangeEvent>\
         <List><TemplateId><![CDATA[{ONCE}]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List>\
         </SubscribeMsgChangeEvent></xml>"
    );
    let encrypt = fake_wechat::encrypt_push(AES_KEY, APPID, &change, [9; 16]);
    let compatible = format!(
        "{}<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
        change
            .replace("reject", "accept")
            .trim_end_matches("</xml>")
    );
    assert_eq!(
        push(env.http, &query("35", &encrypt), &compatible).await,
        (200, "success".into())
    );
    assert_eq!(consent(&env, bob, ONCE).await, Some(("reject".into(), 0)));

    // The plain `signature` is still required.
    let unsigned = query("36", &encrypt).replace("signature=", "signature=0");
    assert_eq!(push(env.http, &unsigned, &compatible).await.0, 403);

    stop(&mut child).await;
}

#[tokio::test]
async fn an_encrypted_push_without_the_key_configured_is_answered_501() {
    let env = consent_env(&format!("{}{}", intake(""), once_job("remind", ""))).await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    let body = json!({ "ToUserName": "gh_1", "Encrypt": "AAAA" }).to_string();
    let query = format!("{}&encrypt_type=aes&msg_signature=00", signed("41"));
    let (status, text) = push(env.http, &query, &body).await;
    assert_eq!(status, 501);
    assert!(text.contains("intake.encoding_aes_key"), "{text}");
    stop(&mut child).await;
}

//! WeChat's subscribe-message event pushes (wechat-api.md §6.1), in their JSON and
//! XML forms, read into one shape. The JSON form has quirks: `List` is an object
//! for one entry and an array for several, numbers may come quoted, and older
//! pushes nest the list under the event's name.

use serde::Deserialize;

use crate::domain::{ConsentResult, OpenId, TemplateId};

/// One entry of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    /// A popup answer (`subscribe_msg_popup_event`) or a later cancel
    /// (`subscribe_msg_change_event`).
    Consent {
        /// The template.
        template_id: TemplateId,
        /// What the user chose.
        result: ConsentResult,
    },
    /// The final result of a send (`subscribe_msg_sent_event`).
    Sent {
        /// The template.
        template_id: TemplateId,
        /// The msgid the send call returned.
        msgid: u64,
        /// 0 for success.
        error_code: i64,
        /// Its text.
        error_status: String,
    },
}

/// One push: who it is about and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Push {
    /// The user (`FromUserName`).
    pub openid: OpenId,
    /// `CreateTime`, as text; with the openid it names a push for deduplication.
    pub create_time: String,
    /// `Event`.
    pub event: String,
    /// Its entries; empty for events wxpush does not use.
    pub items: Vec<Item>,
}

/// Why a push could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct EventError(pub String);

/// A text or a number: JSON pushes quote numbers or not.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Flex {
    Text(String),
    Int(i64),
    UInt(u64),
}

impl Flex {
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.trim().to_owned(),
            Self::Int(i) => i.to_string(),
            Self::UInt(u) => u.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "TemplateId")]
    template_id: Option<Flex>,
    #[serde(rename = "SubscribeStatusString")]
    status: Option<Flex>,
    #[serde(rename = "MsgID")]
    msgid: Option<Flex>,
    #[serde(rename = "ErrorCode")]
    error_code: Option<Flex>,
    #[serde(rename = "ErrorStatus")]
    error_status: Option<Flex>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Entry),
    Many(Vec<Entry>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<Entry> {
        match self {
            Self::One(e) => vec![e],
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
struct JsonNested {
    #[serde(rename = "List")]
    list: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
struct JsonPush {
    #[serde(rename = "FromUserName")]
    from: Option<Flex>,
    #[serde(rename = "CreateTime")]
    create_time: Option<Flex>,
    #[serde(rename = "MsgType")]
    msg_type: Option<Flex>,
    #[serde(rename = "Event")]
    event: Option<Flex>,
    #[serde(rename = "List")]
    list: Option<OneOrMany>,
    #[serde(rename = "SubscribeMsgPopupEvent")]
    popup: Option<JsonNested>,
    #[serde(rename = "SubscribeMsgChangeEvent")]
    change: Option<JsonNested>,
    #[serde(rename = "SubscribeMsgSentEvent")]
    sent: Option<JsonNested>,
}

/// XML has only text, so its entries read as plain strings.
#[derive(Debug, Deserialize)]
struct XmlEntry {
    #[serde(rename = "TemplateId")]
    template_id: Option<String>,
    #[serde(rename = "SubscribeStatusString")]
    status: Option<String>,
    #[serde(rename = "MsgID")]
    msgid: Option<String>,
    #[serde(rename = "ErrorCode")]
    error_code: Option<String>,
    #[serde(rename = "ErrorStatus")]
    error_status: Option<String>,
}

impl From<XmlEntry> for Entry {
    fn from(x: XmlEntry) -> Self {
        Self {
            template_id: x.template_id.map(Flex::Text),
            status: x.status.map(Flex::Text),
            msgid: x.msgid.map(Flex::Text),
            error_code: x.error_code.map(Flex::Text),
            error_status: x.error_status.map(Flex::Text),
        }
    }
}

#[derive(Debug, Deserialize)]
struct XmlNested {
    #[serde(rename = "List", default)]
    list: Vec<XmlEntry>,
}

#[derive(Debug, Deserialize)]
struct XmlPush {
    #[serde(rename = "FromUserName")]
    from: Option<String>,
    #[serde(rename = "CreateTime")]
    create_time: Option<String>,
    #[serde(rename = "MsgType")]
    msg_type: Option<String>,
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "SubscribeMsgPopupEvent")]
    popup: Option<XmlNested>,
    #[serde(rename = "SubscribeMsgChangeEvent")]
    change: Option<XmlNested>,
    #[serde(rename = "SubscribeMsgSentEvent")]
    sent: Option<XmlNested>,
}

/// The envelope of a secure-mode push: only `Encrypt` is needed.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "Encrypt")]
    encrypt: Option<String>,
}

/// The `Encrypt` ciphertext of a secure- or compatible-mode push body.
pub(super) fn encrypted_part(body: &[u8]) -> Result<String, EventError> {
    let text = std::str::from_utf8(body).map_err(|_| EventError("body is not UTF-8".into()))?;
    let envelope: Envelope = if text.trim_start().starts_with('<') {
        quick_xml::de::from_str(text).map_err(|e| EventError(format!("bad XML: {e}")))?
    } else {
        serde_json::from_str(text).map_err(|e| EventError(format!("bad JSON: {e}")))?
    };
    envelope
        .encrypt
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| EventError("Encrypt is missing".into()))
}

/// Reads a push body; XML when it starts with `<`, JSON otherwise.
pub(super) fn parse(body: &[u8]) -> Result<Push, EventError> {
    let text = std::str::from_utf8(body).map_err(|_| EventError("body is not UTF-8".into()))?;
    let (from, create_time, msg_type, event, entries) = if text.trim_start().starts_with('<') {
        let p: XmlPush =
            quick_xml::de::from_str(text).map_err(|e| EventError(format!("bad XML: {e}")))?;
        let entries = [p.popup, p.change, p.sent]
            .into_iter()
            .flatten()
            .flat_map(|n| n.list)
            .map(Entry::from)
            .collect::<Vec<_>>();
        let text = |v: Option<String>| v.map(Flex::Text);
        (
            text(p.from),
            text(p.create_time),
            text(p.msg_type),
            text(p.event),
            entries,
        )
    } else {
        let p: JsonPush =
            serde_json::from_str(text).map_err(|e| EventError(format!("bad JSON: {e}")))?;
        let entries = p
            .list
            .into_iter()
            .chain(
                [p.popup, p.change, p.sent]
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.list),
            )
            .flat_map(OneOrMany::into_vec)
            .collect::<Vec<_>>();
        (p.from, p.create_time, p.msg_type, p.event, entries)
    };
    let need = |v: Option<Flex>, name: &str| {
        v.map(|f| f.text())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| EventError(format!("{name} is missing")))
    };
    let from = need(from, "FromUserName")?;
    let openid = OpenId::parse(&from).map_err(|e| EventError(format!("FromUserName: {e}")))?;
    let create_time = need(create_time, "CreateTime")?;
    let msg_type = msg_type.map(|m| m.text()).unwrap_or_default();
    let event = event.map(|e| e.text()).unwrap_or_default();
    let items = if msg_type == "event" {
        entries
            .into_iter()
            .map(|e| item(&event, e))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect()
    } else {
        Vec::new()
    };
    Ok(Push {
        openid,
        create_time,
        event,
        items,
    })
}

fn item(event: &str, e: Entry) -> Result<Option<Item>, EventError> {
    let field = |v: &Option<Flex>, name: &str| {
        v.as_ref()
            .map(Flex::text)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| EventError(format!("List.{name} is missing")))
    };
    let parse_template = |v: &Option<Flex>| {
        TemplateId::parse(&field(v, "TemplateId")?)
            .map_err(|err| EventError(format!("List.TemplateId: {err}")))
    };
    Ok(Some(match event {
        "subscribe_msg_popup_event" | "subscribe_msg_change_event" => {
            let status = field(&e.status, "SubscribeStatusString")?;
            let result = ConsentResult::parse(&status)
                .map_err(|err| EventError(format!("List.SubscribeStatusString: {err}")))?;
            Item::Consent {
                template_id: parse_template(&e.template_id)?,
                result,
            }
        }
        "subscribe_msg_sent_event" => {
            let msgid = field(&e.msgid, "MsgID")?;
            let code = field(&e.error_code, "ErrorCode")?;
            Item::Sent {
                template_id: parse_template(&e.template_id)?,
                msgid: msgid
                    .parse()
                    .map_err(|_| EventError(format!("List.MsgID: {msgid:?} is not a msgid")))?,
                error_code: code
                    .parse()
                    .map_err(|_| EventError(format!("List.ErrorCode: {code:?} is not a number")))?,
                error_status: e.error_status.as_ref().map(Flex::text).unwrap_or_default(),
            }
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(s: &str) -> TemplateId {
        TemplateId::parse(s).unwrap()
    }

    #[test]
    fn json_list_as_one_object_with_quoted_numbers() {
        let p = parse(br#"{"ToUserName":"gh_xxx","FromUserName":"oXXXX00000000000000000000001","CreateTime":"1620963428","MsgType":"event",
            "Event":"subscribe_msg_sent_event",
            "List":{"TemplateId":"BEwX0BO-T3","MsgID":"1864323726461255680","ErrorCode":"0","ErrorStatus":"success"}}"#).unwrap();
        assert_eq!(p.openid.as_ref(), "oXXXX00000000000000000000001");
        assert_eq!(p.create_time, "1620963428");
        assert_eq!(
            p.items,
            [Item::Sent {
                template_id: tid("BEwX0BO-T3"),
                msgid: 1_864_323_726_461_255_680,
                error_code: 0,
                error_status: "success".into()
            }]
        );
    }

    #[test]
    fn json_list_as_array_and_nested_under_the_event_name() {
        let array = parse(br#"{"FromUserName":"oU00000000000000000000000001","CreateTime":1620963428,"MsgType":"event","Event":"subscribe_msg_popup_event",
            "List":[{"TemplateId":"T1","SubscribeStatusString":"accept","PopupScene":"0"},
                    {"TemplateId":"T2","SubscribeStatusString":"reject","PopupScene":0}]}"#).unwrap();
        assert_eq!(
            array.items,
            [
                Item::Consent {
                    template_id: tid("T1"),
                    result: ConsentResult::Accept
                },
                Item::Consent {
                    template_id: tid("T2"),
                    result: ConsentResult::Reject
                },
            ]
        );
        let nested = parse(br#"{"FromUserName":"oU00000000000000000000000001","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_sent_event",
            "SubscribeMsgSentEvent":{"List":{"TemplateId":"T1","MsgID":17,"ErrorCode":10002,"ErrorStatus":"fail"}}}"#).unwrap();
        assert!(matches!(
            nested.items[..],
            [Item::Sent {
                msgid: 17,
                error_code: 10002,
                ..
            }]
        ));
    }

    #[test]
    fn xml_with_cdata_and_repeated_lists() {
        let p = parse(
            br#"<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>
<FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>
<CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[subscribe_msg_popup_event]]></Event>
<SubscribeMsgPopupEvent>
<List><TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>
<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene></List>
<List><TemplateId><![CDATA[9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI]]></TemplateId>
<SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>2</PopupScene></List>
</SubscribeMsgPopupEvent></xml>"#,
        )
        .unwrap();
        assert_eq!(p.openid.as_ref(), "otFpruAK8D-E6EfStSYonYSBZ8_4");
        assert_eq!(p.items.len(), 2);
        assert_eq!(
            p.items[1],
            Item::Consent {
                template_id: tid("9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"),
                result: ConsentResult::Reject
            }
        );
        let one = parse(br#"<xml><FromUserName>oU00000000000000000000000001</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>
<Event>subscribe_msg_change_event</Event><SubscribeMsgChangeEvent><List><TemplateId>T1</TemplateId>
<SubscribeStatusString>reject</SubscribeStatusString></List></SubscribeMsgChangeEvent></xml>"#).unwrap();
        assert_eq!(one.items.len(), 1);
    }

    #[test]
    fn other_events_have_no_items_and_bad_bodies_say_why() {
        let p = parse(br#"{"FromUserName":"oU00000000000000000000000001","CreateTime":1,"MsgType":"text","Content":"hi"}"#)
            .unwrap();
        assert!(p.items.is_empty());
        let e = parse(br#"{"CreateTime":1,"MsgType":"event"}"#).unwrap_err();
        assert!(e.0.contains("FromUserName"), "{e}");
        let e = parse(br#"{"FromUserName":"oU00000000000000000000000001","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_popup_event","List":{"TemplateId":"T1","SubscribeStatusString":"maybe"}}"#).unwrap_err();
        assert!(e.0.contains("SubscribeStatusString"), "{e}");
        assert!(parse(b"<xml><FromUserName>").is_err());
        assert!(parse(b"not json").is_err());
    }
}

//! WeChat errcodes mapped to what the sender does next (wechat-api.md §1, §2.3, §8).

use std::time::Duration;

use crate::domain::Status;

/// What a reply to `subscribeMessage.send` means for the delivery and the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Accepted (errcode 0).
    Sent,
    /// The token was rejected: invalidate it, fetch a fresh one, retry once.
    RefreshToken,
    /// Transient: retry after at least `after` (plus backoff).
    Retry {
        /// The least wait WeChat asks for.
        after: Duration,
    },
    /// Final for this recipient; the run goes on.
    Final(Status),
    /// Every other send would fail the same way: record `this` for the delivery,
    /// stop the run, leave the rest pending for a later resume.
    StopRun {
        /// What the delivery that got the errcode records (`Pending` if it was not used up).
        this: Status,
    },
}

/// Send errcodes that pass (busy, per-minute quota, a concurrent send, an IP
/// confirmation): a delivery that used up its tries on one of these is retried
/// when its run is re-run.
pub const TRANSIENT_SEND_ERRCODES: &[i64] = &[-1, 45011, 43108, 89503];

/// Classifies a send reply's errcode. Unknown errcodes are final failures: never
/// retried blindly, always recorded with their errmsg.
pub fn classify_send(errcode: i64) -> Disposition {
    use Disposition::*;
    match errcode {
        0 => Sent,
        c if token_rejected(c) => RefreshToken,
        // System busy.
        -1 => Retry {
            after: Duration::ZERO,
        },
        // Per-minute quota: WeChat says "retry next minute".
        45011 => Retry {
            after: Duration::from_secs(60),
        },
        // Two sends to one user at once; we serialise per openid, so only another
        // process can cause this.
        43108 => Retry {
            after: Duration::from_secs(1),
        },
        // The admin must confirm this IP; retry slowly.
        89503 => Retry {
            after: Duration::from_secs(60),
        },
        43101 => Final(Status::Refused),
        // Bad data for this recipient (47003, 45168) or an openid of another
        // app (40003): never retried.
        47003 | 45168 | 40003 => Final(Status::Invalid),
        // Daily quota: nothing more today, and this message was not used up.
        45009 => StopRun {
            this: Status::Pending,
        },
        // Per job or account: bad template, bad page, capability banned. Refused,
        // so not used up: it goes out once the cause is fixed and the run resumed.
        40037 | 41030 | 43107 => StopRun {
            this: Status::Pending,
        },
        // Account, permission or request-shape problems: fix and resume.
        40002 | 40013 | 40125 | 40164 | 40243 | 41001 | 41002 | 41004 | 43002 | 43003 | 44002
        | 45002 | 47001 | 48001 | 48004 | 50001 | 50002 | 50004 | 50007 | 89506 | 89507 => {
            StopRun {
                this: Status::Pending,
            }
        }
        _ => Final(Status::Failed),
    }
}

/// What a send's errcode means, in words for people (English, Chinese), as
/// wechat-api.md §1.3 and §2.3 give it; `None` for one not known here.
pub fn meaning(errcode: i64) -> Option<(&'static str, &'static str)> {
    Some(match errcode {
        0 => ("accepted", "已接收"),
        -1 => ("WeChat was busy; retried", "微信系统繁忙,已重试"),
        40001 | 40014 | 42001 => (
            "the access_token was rejected; a fresh one was fetched",
            "access_token 无效或过期,已重新获取",
        ),
        40003 => (
            "not an openid of this mini program",
            "openid 无效或不属于本小程序",
        ),
        40037 => ("the template_id is not valid", "template_id 无效"),
        41030 => (
            "the page is not in the released mini program",
            "page 路径不在已发布的小程序中",
        ),
        43101 => (
            "the user refused or has no acceptance left",
            "用户拒绝接收或没有剩余的订阅次数",
        ),
        43107 => (
            "subscribe messages or this template are banned for the account",
            "账号或该模板的订阅消息能力已被封禁",
        ),
        43108 => (
            "two sends to one user at once; retried",
            "同时向同一用户发送,已重试",
        ),
        45009 => ("the daily quota is used up", "当日调用次数已用完"),
        45011 => (
            "the per-minute quota was hit; retried",
            "触发每分钟频率限制,已重试",
        ),
        45168 => ("the data has a sensitive word", "内容含有敏感词"),
        47003 => (
            "the data breaks a keyword rule (errmsg names the field)",
            "数据不符合关键词规则(errmsg 指明字段)",
        ),
        48001 => ("the API is not authorized for the account", "接口未授权"),
        89503 => (
            "the account admin must confirm this IP",
            "需要账号管理员确认调用 IP",
        ),
        _ => return None,
    })
}

/// Whether a business call's errcode says the access_token was rejected
/// (invalid, not the latest, expired): replace it and retry once.
pub fn token_rejected(errcode: i64) -> bool {
    matches!(errcode, 40001 | 40014 | 42001)
}

/// What a failed token request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    /// Retry after at least this long.
    Transient(Duration),
    /// A configuration or account problem: retrying will not help.
    Fatal,
}

/// Classifies a token endpoint's errcode.
pub fn classify_token(errcode: i64) -> TokenFailure {
    match errcode {
        -1 => TokenFailure::Transient(Duration::ZERO),
        45011 | 89503 => TokenFailure::Transient(Duration::from_secs(60)),
        _ => TokenFailure::Fatal,
    }
}

/// An operator's hint for a token errcode, added to the error line.
pub(crate) fn token_hint(errcode: i64) -> &'static str {
    match errcode {
        40001 | 40125 | 41004 => "check [wechat] secret / WXPUSH__WECHAT__SECRET",
        40013 | 41002 => "check [wechat] appid",
        40164 => "add this server's IP to the API IP whitelist in the mini program console",
        40243 => "the AppSecret is frozen; unfreeze it in the console",
        45009 => "the daily token quota is used up; it resets tomorrow (or use clear_quota)",
        89503 => "the account admin must confirm this IP in WeChat",
        89506 | 89507 => "the admin rejected this IP; wait before retrying",
        50004 | 50007 => "the account or its token API is frozen",
        _ => "see the WeChat errcode table",
    }
}

#[cfg(test)]
mod tests {
    use super::Disposition::*;
    use super::*;

    /// Every send-relevant errcode in wechat-api.md, with the class we give it.
    #[test]
    fn the_transient_errcodes_are_exactly_the_retried_ones() {
        for code in -1..=100_000 {
            let retried = matches!(classify_send(code), Retry { .. });
            assert_eq!(TRANSIENT_SEND_ERRCODES.contains(&code), retried, "{code}");
        }
    }

    #[test]
    fn every_documented_send_errcode_has_its_class() {
        let table: &[(i64, Disposition)] = &[
            (0, Sent),
            (
                -1,
                Retry {
                    after: Duration::ZERO,
                },
            ),
            (40001, RefreshToken),
            (40014, RefreshToken),
            (42001, RefreshToken),
            (40003, Final(Status::Invalid)),
            (
                40037,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                41030,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                43107,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (43101, Final(Status::Refused)),
            (
                43108,
                Retry {
                    after: Duration::from_secs(1),
                },
            ),
            (45168, Final(Status::Invalid)),
            (47003, Final(Status::Invalid)),
            (
                45009,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                45011,
                Retry {
                    after: Duration::from_secs(60),
                },
            ),
            (
                89503,
                Retry {
                    after: Duration::from_secs(60),
                },
            ),
            (
                48001,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                48004,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                41001,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                43002,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                43003,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                44002,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                45002,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                47001,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                50001,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                50002,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                40002,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                40013,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                40125,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                40164,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                40243,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                41002,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                41004,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                50004,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                50007,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                89506,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (
                89507,
                StopRun {
                    this: Status::Pending,
                },
            ),
            (40038, Final(Status::Failed)),
            (99999, Final(Status::Failed)),
        ];
        for (code, want) in table {
            assert_eq!(classify_send(*code), *want, "errcode {code}");
        }
    }

    #[test]
    fn every_documented_token_errcode_has_its_class() {
        let transient = [-1, 45011, 89503];
        let fatal = [
            40001, 40002, 40013, 40125, 40164, 40243, 41002, 41004, 43002, 45009, 50004, 50007,
            89506, 89507,
        ];
        for code in transient {
            assert!(
                matches!(classify_token(code), TokenFailure::Transient(_)),
                "{code}"
            );
        }
        for code in fatal {
            assert_eq!(classify_token(code), TokenFailure::Fatal, "{code}");
            assert!(!token_hint(code).is_empty());
        }
    }
}

//! Device cookies (OWASP, "Slow down online guessing attacks with device cookies"): after a
//! right password at login, the browser gets a cookie naming the login id and a random device
//! id, with their MAC under the operator key's code subkey ([`crate::app::AppDb::keyed_mac`],
//! its own label). A later password of that login id that presents it is counted by the
//! [`super::throttle`] on that (login id, device) alone: someone else on the person's network
//! (their /64, their NAT) cannot lock that device out, and the device's own wrong passwords
//! lock out that device only.
//!
//! The cookie is `HttpOnly` (a page's script cannot read it), `SameSite=Strict`, for `/api`,
//! `Secure` with `--secure-cookie`; it lasts [`DEVICE_COOKIE_MS`] and each login with it
//! renews it. Its value, `<device: 32 hex>.<expires_ms>.<login id, hex>.<MAC: 64 hex>`, holds
//! nothing secret: without the operator key no one can make one, nor change the login id it
//! names. The MAC also covers the login's password hash (salted, new at each change), so a
//! password change, or an id made anew, ends every cookie minted before: someone who once knew
//! the password cannot keep a stock of devices, each with its own guesses (red team of issue
//! 12, round 3). Clients that keep no cookies (the seed's scripts) are counted per address as
//! before.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::request::Parts;
use rand::RngCore;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;

use super::extract::cookie_value;
use super::throttle::KNOWN_FOR_MS;
use super::{ApiError, AppState};
use crate::app::AppDb;

/// How long a device cookie lasts after the login that set (or renewed) it: as long as a
/// sign-in address stays known.
pub const DEVICE_COOKIE_MS: u64 = KNOWN_FOR_MS;

/// The label of the device cookies' MACs.
const LABEL: &[u8] = b"medchain/device-cookie/v1\0";

/// The MAC of a cookie of `device` for `account` until `expires_ms`, bound to the login's
/// `binding` ([`AppDb::device_binding`]); the length prefixes keep the parts apart.
fn mac(app: &AppDb, device: &[u8; 16], expires_ms: u64, account: &str, binding: &str) -> [u8; 32] {
    app.keyed_mac(
        LABEL,
        &[
            device,
            &expires_ms.to_be_bytes(),
            &(account.len() as u64).to_be_bytes(),
            account.as_bytes(),
            binding.as_bytes(),
        ],
    )
}

/// The value of a device cookie of `device` for `account`, valid until `expires_ms` and while
/// the login's `binding` stays.
fn value(app: &AppDb, device: &[u8; 16], expires_ms: u64, account: &str, binding: &str) -> String {
    format!(
        "{}.{expires_ms}.{}.{}",
        hex::encode(device),
        hex::encode(account),
        hex::encode(mac(app, device, expires_ms, account, binding))
    )
}

/// The device a cookie `value` names for `account` (32 hex digits), if its MAC holds, it names
/// that login id, and it has not expired.
fn device_of(app: &AppDb, value: &str, account: &str, now_ms: u64) -> Option<[u8; 16]> {
    let mut parts = value.split('.');
    let (device_hex, expires, account_hex, mac_hex) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let mut device = [0u8; 16];
    hex::decode_to_slice(device_hex, &mut device).ok()?;
    let expires_ms: u64 = expires.parse().ok()?;
    let mut presented = [0u8; 32];
    hex::decode_to_slice(mac_hex, &mut presented).ok()?;
    if hex::decode(account_hex).ok()? != account.as_bytes() || expires_ms <= now_ms {
        return None;
    }
    let binding = app.device_binding(account).ok()??;
    let expected = mac(app, &device, expires_ms, account, &binding);
    bool::from(expected.ct_eq(&presented)).then_some(device)
}

/// The device cookie a request presents (this hospital's), not yet checked.
pub(crate) struct PresentedDevice(Option<String>);

impl FromRequestParts<AppState> for PresentedDevice {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        Ok(PresentedDevice(
            cookie_value(&parts.headers, &state.device_cookie).map(str::to_string),
        ))
    }
}

impl PresentedDevice {
    /// The device this cookie names for `account` (32 hex digits), if it is valid for it.
    pub(crate) fn device_for(&self, state: &AppState, account: &str) -> Option<String> {
        let value = self.0.as_deref()?;
        device_of(&state.app, value, account, state.now_ms()).map(hex::encode)
    }
}

/// The `Set-Cookie` of `account`'s device cookie after a right password: `device` (32 hex
/// digits, from the cookie presented) renewed, or a new device.
pub(crate) fn set_cookie(
    state: &AppState,
    account: &str,
    device: Option<&str>,
) -> Result<HeaderValue, ApiError> {
    let mut id = [0u8; 16];
    if device
        .and_then(|d| hex::decode_to_slice(d, &mut id).ok())
        .is_none()
    {
        OsRng.fill_bytes(&mut id);
    }
    let expires_ms = state.now_ms().saturating_add(DEVICE_COOKIE_MS);
    let binding = state
        .app
        .device_binding(account)?
        .ok_or_else(|| ApiError::internal("a login signed in without an account row"))?;
    let cookie = format!(
        "{}={}; Path=/api; HttpOnly; SameSite=Strict; Max-Age={}{}",
        state.device_cookie,
        value(&state.app, &id, expires_ms, account, &binding),
        DEVICE_COOKIE_MS / 1000,
        state.cookie_secure()
    );
    HeaderValue::from_str(&cookie).map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_cookie_holds_only_for_its_login_id_its_key_and_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_db(&dir.path().join("app.db"));
        for id in ["p001", "p002"] {
            app.create_account(
                crate::app::NewAccount {
                    id: id.into(),
                    role: crate::app::Role::Patient,
                    department: None,
                    name: None,
                    password: zeroize::Zeroizing::new("correct horse battery".into()),
                },
                1,
            )
            .unwrap();
        }
        let binding = app.device_binding("p001").unwrap().unwrap();
        let device = [7u8; 16];
        let cookie = value(&app, &device, 2_000, "p001", &binding);
        assert_eq!(device_of(&app, &cookie, "p001", 1_999), Some(device));
        // Expired; another login id; changed in any part; another operator key.
        assert_eq!(device_of(&app, &cookie, "p001", 2_000), None);
        assert_eq!(device_of(&app, &cookie, "p002", 1_000), None);
        let parts: Vec<&str> = cookie.split('.').collect();
        let forged = [
            format!(
                "{}.{}.{}.{}",
                hex::encode([8u8; 16]),
                parts[1],
                parts[2],
                parts[3]
            ),
            format!("{}.3000.{}.{}", parts[0], parts[2], parts[3]),
            format!(
                "{}.{}.{}.{}",
                parts[0],
                parts[1],
                hex::encode("p002"),
                parts[3]
            ),
            format!("{cookie}.x"),
            cookie[..cookie.len() - 2].to_string(),
        ];
        for forged in &forged {
            assert_eq!(device_of(&app, forged, "p001", 1_000), None, "{forged}");
            assert_eq!(device_of(&app, forged, "p002", 1_000), None, "{forged}");
        }
        let other = crate::app::AppDb::open_with(
            &dir.path().join("other.db"),
            crate::app::AppConfig::fast_hashing_for_tests(),
            &crate::app::test_key(2),
        )
        .unwrap();
        assert_eq!(device_of(&other, &cookie, "p001", 1_000), None);
        // A password change ends every cookie minted before it.
        app.set_password("p001", "another horse battery").unwrap();
        assert_eq!(device_of(&app, &cookie, "p001", 1_000), None);
        // Not a MAC of an in-person code either: its own label.
        assert_ne!(
            mac(&app, &device, 2_000, "p001", &binding),
            app.keyed_mac(
                b"medchain/code/v2\0",
                &[&device, &2_000u64.to_be_bytes(), b"p001"]
            )
        );
    }
}

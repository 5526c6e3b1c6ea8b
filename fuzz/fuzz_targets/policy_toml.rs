//! Policy files: arbitrary UTF-8 into the issuance policy
//! (`alts_core::policy::IssuancePolicy::from_toml`) and the RPC authorization
//! policy (`tonic_alts::RpcAuthzPolicy::from_toml_str` and `from_json_str`).
//! An issuance policy that parses is then consulted for a few fixed (issuer,
//! category, identity) triples, which must not panic.
#![no_main]

use alts_core::cert::Category;
use alts_core::policy::IssuancePolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = IssuancePolicy::from_toml(s) {
        for (issuer, identity) in [
            ("scheduler", "backend-prod"),
            ("", ""),
            ("a*", "*b"),
            ("root", "x.y-z"),
        ] {
            for category in [Category::Workload, Category::Person, Category::Machine] {
                let _ = p.check(issuer, category, identity);
            }
        }
    }
    let _ = tonic_alts::RpcAuthzPolicy::from_toml_str(s);
    let _ = tonic_alts::RpcAuthzPolicy::from_json_str(s);
});

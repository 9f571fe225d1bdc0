//! Integration tests: the real service and the mock IdP on port 0, driven over real HTTP.
//! All modules link into this one binary (zero2prod's layout).

mod bearer;
mod browser;
mod certificate;
mod deployable;
mod doctor;
mod federated;
mod helpers;
mod hostile;
mod id_token_rules;
mod in_browser;
mod layers;
mod login_flow;
mod metrics;
mod mock_certificates;
mod multitenant;
mod otel;
mod overage;
mod pages;
mod process;
mod readiness;
mod redis;
mod rotation;
mod routing;
mod server_limits;
mod sessions;
mod setup;
mod sign_out;
mod store_contract;
mod traces;
mod upstream;
mod userinfo;

//! STUB (replaced by the mock branch).
#[derive(Clone, Debug)]
pub struct MockIdpSettings {
    pub listen: std::net::SocketAddr,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secrets: Vec<String>,
    pub redirect_uris: Vec<String>,
}
impl Default for MockIdpSettings {
    fn default() -> Self {
        todo!()
    }
}
pub struct MockIdp;
impl MockIdp {
    pub async fn start(_s: MockIdpSettings) -> std::io::Result<MockIdp> {
        todo!()
    }
    pub fn base_url(&self) -> String {
        todo!()
    }
    pub async fn shutdown(self) {}
}

//! Types that cross the HTTP API as JSON (beyond Weave's plain-text formats).

use serde::{Deserialize, Serialize};

/// A container interface the plugin attached, registered with the router so that `weave ps`
/// can list CNI containers (Weave never could: issue #2404).
/// `POST /cni/attachments` (JSON body), `DELETE /cni/attachments/<id>/<ifname>`,
/// `GET /cni/attachments` (JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// Host-side veth name.
    pub host_veth: String,
    /// Container interface MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// CIDRs, e.g. `10.32.0.2/12`.
    pub ips: Vec<String>,
    /// Netns path as given by the runtime.
    pub netns: String,
    /// The IPAM owner ID of its addresses; `DELETE /ip/<ipam_id>` also drops the attachment.
    #[serde(default)]
    pub ipam_id: String,
}

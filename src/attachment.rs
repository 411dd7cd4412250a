//! The CNI attachment: a container interface the plugin attached, as the router records it
//! (with the allocation, in `ipam.json`) and the HTTP API carries it as JSON. A leaf shared by
//! the IPAM service, its store, the sweep and the API, so persistence does not depend on the
//! HTTP layer.

use crate::{Error, ErrorKind, Result};
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

/// The MAC a container interface gets for `ip`: locally administered unicast `0e:57` plus
/// the four address bytes. Unique while addresses are, known to the router without asking
/// the kernel, and stable when an address is reused, so peers' ARP caches stay right.
pub fn mac_for_ip(ip: std::net::Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0e, 0x57, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:cc:dd:ee:ff`, as CNI results and `ip link` print a MAC.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// (container id, ifname): one attachment per interface.
pub type AttachmentKey = (String, String);

impl Attachment {
    /// Its key among the attachments.
    pub fn key(&self) -> AttachmentKey {
        (self.container_id.clone(), self.ifname.clone())
    }

    /// Checks what a plugin says about an attachment before it is recorded.
    pub fn validate(&self) -> Result<()> {
        validate_key(&self.container_id, &self.ifname)
    }
}

/// Checks a (container id, ifname) pair: a valid container ID and a Linux interface name.
pub fn validate_key(container_id: &str, ifname: &str) -> Result<()> {
    validate_id(container_id)?;
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ']) {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("invalid interface name {ifname:?}"),
        ));
    }
    Ok(())
}

/// Checks a container ID: non-empty, at most 255 bytes, printable ASCII without `/` or
/// whitespace (so it is safe in a URL path and a log line). `weave:expose` and `_` pass.
pub fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > 255 {
        "longer than 255 bytes"
    } else if !id.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        "must be printable ASCII without '/' or whitespace"
    } else {
        return Ok(());
    };
    Err(Error::new(
        ErrorKind::InvalidConfig,
        format!("invalid container id {id:?}: {reason}"),
    ))
}

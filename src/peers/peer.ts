// What Cove knows about a sibling Cove on the site's LAN, however it was found (the static
// COVE_PEERS list or mDNS discovery).

/** A sibling Cove as discovery announces it. */
export interface PeerInfo {
  /** The peer's node id (COVE_NODE_ID or the id persisted in its data directory). */
  id: string;
  /** The peer's site (COVE_SITE); peers of other sites are ignored. */
  site: string;
  /** Base URL of the peer's registry API, e.g. http://10.0.0.5:5000 (no trailing slash). */
  url: string;
  /** The peer's Cove version, when it said. */
  version?: string;
}

//! The restream's own login (`rtsp_username` / `rtsp_password`): HTTP Basic on every request,
//! one role that may open every camera. The cameras' credentials have nothing to do with it.

use gst_rtsp_server::prelude::*;
use gst_rtsp_server::{
    RTSP_PERM_MEDIA_FACTORY_ACCESS, RTSP_PERM_MEDIA_FACTORY_CONSTRUCT,
    RTSP_TOKEN_MEDIA_FACTORY_ROLE, RTSPAuth, RTSPMediaFactory, RTSPServer, RTSPToken,
};

/// The role every logged-in player gets.
const VIEWER_ROLE: &str = "viewer";

/// Makes `server` ask for `user` and `password`; factories then need [`allow_viewers`].
pub fn require_basic_auth(server: &RTSPServer, user: &str, password: &str) {
    let auth = RTSPAuth::new();
    let token = RTSPToken::builder()
        .field(RTSP_TOKEN_MEDIA_FACTORY_ROLE, VIEWER_ROLE)
        .build();
    auth.add_basic(RTSPAuth::make_basic(user, password).as_str(), &token);
    server.set_auth(Some(&auth));
}

/// Lets logged-in players open `factory`'s stream.
pub fn allow_viewers(factory: &impl IsA<RTSPMediaFactory>) {
    factory.add_role_from_structure(
        &gst::Structure::builder(VIEWER_ROLE)
            .field(RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
            .field(RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
            .build(),
    );
}

/// Both at once, for a server with a single stream.
pub fn require_login(
    server: &RTSPServer,
    factory: &impl IsA<RTSPMediaFactory>,
    user: &str,
    password: &str,
) {
    require_basic_auth(server, user, password);
    allow_viewers(factory);
}

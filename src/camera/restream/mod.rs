//! The RTSP restream: `rtsp://<host>:<rtsp_port>/<camera>` for every camera, video and audio as
//! the camera sends them, over TCP or UDP, behind the optional `rtsp_username`/`rtsp_password`.
//!
//! gst-rtsp-server runs on a GLib main context of its own, on its own thread; each client gets a
//! media fed from the camera's hub ([`factory`], [`feeder`]). The cameras' credentials never
//! reach this module: it sees cameras only through their [`CameraHandle`]s.

mod auth;
mod factory;
mod feeder;

use std::net::{Ipv4Addr, TcpListener};
use std::thread::JoinHandle;

use anyhow::{Context, anyhow};
use gst::glib;
use gst_rtsp_server::prelude::*;

pub use auth::{allow_viewers, require_basic_auth, require_login};
pub use factory::payloader_for;
pub use feeder::CLIENT_LAG_LIMIT;

use crate::camera::{CameraHandle, Cameras};
use crate::config::Credentials;

/// The running restream server; [`Restream::stop`] (or dropping it) closes every client.
pub struct Restream {
    main_loop: glib::MainLoop,
    main_context: glib::MainContext,
    server: gst_rtsp_server::RTSPServer,
    thread: Option<JoinHandle<()>>,
}

/// Fails with a clear message when `port` (the `rtsp_port` option) cannot be bound.
pub fn check_port(port: u16) -> anyhow::Result<()> {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .map(drop)
        .map_err(|e| crate::web::port_error("rtsp_port", port, &e))
}

impl Restream {
    /// Serves every stream of `cameras` (main and sub) on `port` (all interfaces); `runtime`
    /// runs the feeding.
    pub fn start(
        port: u16,
        auth: Option<&Credentials>,
        cameras: &Cameras,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        // gst-rtsp-server only says "failed"; find out why first, in the user's words.
        check_port(port)?;
        let main_context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&main_context), false);
        let server = gst_rtsp_server::RTSPServer::new();
        server.set_address("0.0.0.0");
        server.set_service(&port.to_string());
        if let Some(auth) = auth {
            require_basic_auth(&server, &auth.username, auth.password.expose());
        }
        let mounts = server
            .mount_points()
            .context("RTSP server without mount points")?;
        let served: Vec<CameraHandle> = cameras.streams().cloned().collect();
        let login = auth.cloned();
        server.connect_client_connected(move |_, client| {
            let (served, login) = (served.clone(), login.clone());
            client.connect_pre_describe_request(move |_, ctx| {
                describe_status(&served, login.as_ref(), ctx)
            });
        });
        for camera in cameras.streams() {
            let factory = factory::CameraFactory::new(factory::FactoryContext {
                camera: camera.clone(),
                runtime: runtime.clone(),
                main_context: main_context.clone(),
            });
            if auth.is_some() {
                allow_viewers(&factory);
            }
            mounts.add_factory(&mount_path(camera), factory);
        }

        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (server, main_context, main_loop) =
                (server.clone(), main_context.clone(), main_loop.clone());
            std::thread::Builder::new()
                .name("rtsp-restream".into())
                .spawn(move || {
                    let attached = main_context.with_thread_default(|| {
                        let source = server.attach(Some(&main_context));
                        let _ =
                            ready_tx.send(source.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                        if let Ok(source) = source {
                            main_loop.run();
                            // `SourceId::remove` looks in the default context, not ours.
                            if let Some(source) = main_context.find_source_by_id(&source) {
                                source.destroy();
                            }
                        }
                    });
                    if attached.is_err() {
                        let _ = ready_tx.send(Err("cannot own the restream's main context".into()));
                    }
                })
                .context("cannot start the restream thread")?
        };
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the restream thread ended at start"))?
            .map_err(|e| anyhow!("cannot listen on rtsp_port {port}: {e}"))?;
        Ok(Self {
            main_loop,
            main_context,
            server,
            thread: Some(thread),
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> i32 {
        self.server.bound_port()
    }

    /// Closes every client and stops the server's thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let (server, main_loop) = (self.server.clone(), self.main_loop.clone());
        self.main_context.invoke(move || {
            server.client_filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
            main_loop.quit();
        });
        let _ = thread.join();
    }
}

impl Drop for Restream {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The answer to a DESCRIBE before the server looks for the stream: `503 Service Unavailable`
/// for a camera that has not sent anything since Vigil started (there is nothing to describe
/// yet; gst-rtsp-server itself would say `400 Bad Request`), so that a player can tell "try again
/// later" from a mistake. Everything else is left to the server (a wrong path is its `404`),
/// and so is a request without the restream's login (this runs before the server's own check,
/// and a stranger must learn nothing but `401`).
fn describe_status(
    served: &[CameraHandle],
    login: Option<&Credentials>,
    ctx: &gst_rtsp_server::RTSPContext,
) -> gst_rtsp::RTSPStatusCode {
    if let Some(login) = login {
        let logged_in = ctx.request().is_some_and(|request| {
            request.parse_auth_credentials().iter().any(|credential| {
                credential.scheme() == gst_rtsp::RTSPAuthMethod::Basic
                    && credential
                        .authorization()
                        .is_some_and(|encoded| crate::web::basic_credentials_match(encoded, login))
            })
        });
        if !logged_in {
            return gst_rtsp::RTSPStatusCode::Ok;
        }
    }
    let path = ctx
        .uri()
        .map(|uri| uri.decode_path_components().join("/"))
        .unwrap_or_default();
    let waiting = served
        .iter()
        .find(|camera| mount_path(camera) == path)
        .filter(|camera| camera.stream_info().is_none());
    match waiting {
        Some(camera) => {
            tracing::debug!(
                camera = camera.name(),
                "a player asked before the camera sent anything"
            );
            gst_rtsp::RTSPStatusCode::ServiceUnavailable
        }
        None => gst_rtsp::RTSPStatusCode::Ok,
    }
}

/// Where a camera is served: `/<name>`.
pub fn mount_path(camera: &CameraHandle) -> String {
    format!("/{}", camera.name())
}

//! The console attached to a real server over the admin socket: a kick
//! typed at its command line reaches a connected WebSocket user.

use std::time::Duration;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use crate::common::{Closed, TestApp};

fn key(code: KeyCode) -> std::io::Result<Event> {
    Ok(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_kicks_a_connected_user() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("bob").await;
    let mut ws = t.ws(&token).await;
    let console = Attached::new(&t, 100, Duration::from_millis(100)).await;
    console.press(KeyCode::Char(':'));
    console.type_text("kick bob too loud");
    console.press(KeyCode::Enter);
    // A kick asks for confirmation first.
    console.press(KeyCode::Char('y'));

    assert_eq!(ws.closed().await, Closed::Code(4003));
    let kicked = ws
        .buffered
        .iter()
        .find(|f| f["type"] == "kicked")
        .expect("kicked");
    assert_eq!(kicked["data"]["reason"], "too loud");

    let terminal = console.quit().await;
    let screen: String = terminal
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(screen.contains("confab"), "{screen}");
    // The moderation shows in the audit log too.
    let entries = t.app().audit_log(None, None).unwrap();
    assert_eq!(entries.last().map(|e| e.action.as_str()), Some("kick"));
}

/// The admin socket, telling the test which requests it has answered.
struct Watched {
    inner: confab::console::SocketBackend,
    answered: tokio::sync::mpsc::UnboundedSender<(confab::admin::Request, bool)>,
}

impl confab::console::Backend for Watched {
    async fn call(
        &mut self,
        req: &confab::admin::Request,
    ) -> Result<serde_json::Value, confab::admin::AdminError> {
        let result = self.inner.call(req).await;
        let _ = self.answered.send((req.clone(), result.is_ok()));
        result
    }
}

type ConsoleRun = tokio::task::JoinHandle<(
    std::io::Result<confab::console::Exit>,
    Terminal<TestBackend>,
)>;

/// A console attached to the server's admin socket, driven by keys, on a
/// screen of `width` x 30; the test hears each request it had answered.
struct Attached {
    keys: tokio::sync::mpsc::UnboundedSender<std::io::Result<Event>>,
    answers: tokio::sync::mpsc::UnboundedReceiver<(confab::admin::Request, bool)>,
    console: ConsoleRun,
}

impl Attached {
    async fn new(t: &TestApp, width: u16, refresh: Duration) -> Attached {
        let inner = confab::console::SocketBackend::connect(&t.app().config.socket_path())
            .await
            .expect("the console attaches to the admin socket");
        let (answered, answers) = tokio::sync::mpsc::unbounded_channel();
        let backend = Watched { inner, answered };
        let (keys, rx) = tokio::sync::mpsc::unbounded_channel();
        let events = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        }));
        let console = tokio::spawn(async move {
            let mut terminal = Terminal::new(TestBackend::new(width, 30)).unwrap();
            let exit =
                confab::console::run_with(&mut terminal, backend, events, false, refresh).await;
            (exit, terminal)
        });
        Attached {
            keys,
            answers,
            console,
        }
    }

    fn press(&self, code: KeyCode) {
        self.keys.send(key(code)).unwrap();
    }

    fn type_text(&self, text: &str) {
        for c in text.chars() {
            self.press(KeyCode::Char(c));
        }
    }

    /// Waits until a request `what` picks is answered; whether it succeeded.
    async fn answered(&mut self, what: impl Fn(&confab::admin::Request) -> bool) -> bool {
        loop {
            let (req, ok) = tokio::time::timeout(crate::common::WAIT, self.answers.recv())
                .await
                .expect("an answer in time")
                .expect("the console runs");
            if what(&req) {
                return ok;
            }
        }
    }

    /// Quits and returns the last screen.
    async fn quit(self) -> Terminal<TestBackend> {
        self.press(KeyCode::Char('q'));
        let (exit, terminal) = self.console.await.unwrap();
        assert_eq!(exit.unwrap(), confab::console::Exit::Detached);
        terminal
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_a_ban_from_the_server_and_lifts_it() {
    use confab::admin::Request;
    let t = TestApp::spawn().await;
    t.register("bob").await;
    t.app()
        .ban(
            &confab::app::Actor::Operator,
            "bob",
            Some("spam".into()),
            None,
        )
        .await
        .unwrap();
    let mut console = Attached::new(&t, 100, Duration::from_secs(3600)).await;
    console.press(KeyCode::Char('B'));
    // Both lists are in before `u` is read: answers go first.
    assert!(console.answered(|r| matches!(r, Request::Mutes)).await);
    console.press(KeyCode::Char('u'));
    // Lifting asks first, like every action on a user.
    console.press(KeyCode::Char('y'));
    assert!(
        console
            .answered(|r| matches!(r, Request::Unban { username } if username == "bob"))
            .await
    );
    // The refresh after it reads the lists again; then the view is empty.
    assert!(console.answered(|r| matches!(r, Request::Mutes)).await);
    console.press(KeyCode::Esc);
    console.quit().await;
    assert!(
        !t.app()
            .user_by_name("bob")
            .unwrap()
            .banned_at(confab::domain::now_ms())
    );
    let entries = t.app().audit_log(None, None).unwrap();
    assert_eq!(entries.last().map(|e| e.action.as_str()), Some("unban"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_deletes_a_message_chosen_in_the_room_view() {
    use confab::admin::Request;
    let t = TestApp::spawn().await;
    let (token, _) = t.register("alice").await;
    let room = t.create_room(&token, "lounge", "public").await;
    let room_id = room["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for text in ["first", "second"] {
        let (status, body) = t
            .post(
                &format!("/api/rooms/{room_id}/messages"),
                &token,
                serde_json::json!({ "text": text }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["message"]["id"].as_str().unwrap().to_string());
    }
    let mut console = Attached::new(&t, 120, Duration::from_secs(3600)).await;
    assert!(
        console
            .answered(|r| matches!(r, Request::Snapshot { .. }))
            .await
    );
    // The rooms pane, filtered to the room, then its messages.
    console.press(KeyCode::BackTab);
    console.press(KeyCode::Char('/'));
    console.type_text("lounge");
    console.press(KeyCode::Enter);
    console.press(KeyCode::Enter);
    assert!(
        console
            .answered(|r| matches!(r, Request::RoomMessages { room, .. } if *room == room_id))
            .await
    );
    // The newest is selected; the one before it is deleted, after y.
    console.press(KeyCode::Up);
    console.press(KeyCode::Char('d'));
    console.press(KeyCode::Char('y'));
    let first = ids[0].clone();
    assert!(
        console
            .answered(|r| matches!(r, Request::DeleteMessage { id, .. } if *id == first))
            .await
    );
    // The view reads the room again after the refresh.
    assert!(
        console
            .answered(|r| matches!(r, Request::RoomMessages { .. }))
            .await
    );
    console.press(KeyCode::Esc);
    console.quit().await;
    let history = t.history_all(&token, &room_id).await;
    let deleted: Vec<bool> = history
        .iter()
        .map(|m| m["deleted"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(deleted, [true, false]);
    let entries = t.app().audit_log(None, None).unwrap();
    assert_eq!(
        entries.last().map(|e| e.action.as_str()),
        Some("delete_message")
    );
}

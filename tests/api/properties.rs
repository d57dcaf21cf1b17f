//! Property: for random sequences of sends, joins, leaves, disconnects and
//! reconnects, every member sees each room's messages exactly once, in seq
//! order, with nothing missing once it has recovered with `history after`.
//! Runs against the real app (store on disk, hub, writer thread); the
//! network is left out so that many cases fit in a test run.

use std::collections::HashMap;

use confab::app::{Actor, App, SendInput, Target, page};
use confab::domain::{Id, Password, Role, RoomName, User, Username, Visibility};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Send(usize, usize),
    Join(usize, usize),
    Leave(usize, usize),
    Disconnect(usize),
    Connect(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..2usize).prop_map(|(u, r)| Op::Send(u, r)),
        2 => (0..3usize, 0..2usize).prop_map(|(u, r)| Op::Join(u, r)),
        1 => (0..3usize, 0..2usize).prop_map(|(u, r)| Op::Leave(u, r)),
        1 => (0..3usize).prop_map(Op::Disconnect),
        1 => (0..3usize).prop_map(Op::Connect),
    ]
}

struct Client {
    user: User,
    conn: Option<confab::hub::Connected>,
    /// Seqs seen per room, live or recovered.
    seen: HashMap<Id, Vec<u64>>,
    /// The last seq known per room the client is a member of.
    last: HashMap<Id, u64>,
}

impl Client {
    fn drain(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        for frame in conn.ctl.try_take() {
            let v: serde_json::Value = serde_json::from_str(&frame).expect("json");
            if v["type"] == "message" {
                let m = &v["data"]["message"];
                let room = Id::parse("room", m["room"].as_str().unwrap()).unwrap();
                let seq = m["seq"].as_u64().unwrap();
                self.seen.entry(room).or_default().push(seq);
                self.last.insert(room, seq);
            }
        }
    }
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let app: std::sync::Arc<App> = App::open(crate::common::test_config(dir.path())).unwrap();
    let mut clients = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let user = app
            .create_user(
                Username::parse(name).unwrap(),
                Password::parse("password-123").unwrap(),
                Role::User,
            )
            .await
            .unwrap();
        let conn = app
            .hub
            .connect(user.clone(), None, None, || app.ties(user.id))
            .unwrap();
        clients.push(Client {
            user,
            conn: Some(conn),
            seen: HashMap::new(),
            last: HashMap::new(),
        });
    }
    let mut rooms = Vec::new();
    for name in ["red", "blue"] {
        let room = app
            .create_room(
                &Actor::Operator,
                RoomName::parse(name).unwrap(),
                Visibility::Public,
                None,
            )
            .await
            .unwrap();
        rooms.push(room.id);
    }
    // What each client should end up having seen.
    let mut expected: Vec<HashMap<Id, Vec<u64>>> = vec![HashMap::new(); 3];
    let mut member = [[false; 2]; 3];
    // Everyone comes back at the end, and recovers what they missed.
    let ops = ops.into_iter().chain((0..3).map(Op::Connect));
    for op in ops {
        match op {
            Op::Send(u, r) if clients[u].conn.is_some() => {
                if !member[u][r] {
                    // Speaking in a public room joins it.
                    let (_, last) = app.join_room(&clients[u].user, rooms[r]).await.unwrap();
                    member[u][r] = true;
                    clients[u].last.insert(rooms[r], last);
                }
                let msg = app
                    .send_message(
                        &clients[u].user,
                        SendInput {
                            target: Target::Room(rooms[r]),
                            text: "hi".into(),
                            attachments: vec![],
                            client_msg_id: None,
                            reply_to: None,
                            also_in_room: false,
                            previews: true,
                        },
                    )
                    .await
                    .unwrap();
                for (v, exp) in expected.iter_mut().enumerate() {
                    if member[v][r] {
                        exp.entry(rooms[r]).or_default().push(msg.seq);
                    }
                }
            }
            Op::Join(u, r) if clients[u].conn.is_some() && !member[u][r] => {
                let (_, last) = app.join_room(&clients[u].user, rooms[r]).await.unwrap();
                member[u][r] = true;
                clients[u].last.insert(rooms[r], last);
            }
            Op::Leave(u, r) if clients[u].conn.is_some() && member[u][r] => {
                app.leave_room(&clients[u].user, rooms[r]).await.unwrap();
                member[u][r] = false;
            }
            Op::Disconnect(u) => {
                clients[u].drain();
                if let Some(conn) = clients[u].conn.take() {
                    app.hub.disconnect(conn.session);
                }
            }
            Op::Connect(u) if clients[u].conn.is_none() => {
                let user = clients[u].user.clone();
                clients[u].conn = Some(
                    app.hub
                        .connect(user.clone(), None, None, || app.ties(user.id))
                        .unwrap(),
                );
                // Recovery: what was missed, from the last seq known.
                for (r, room) in rooms.iter().enumerate() {
                    if !member[u][r] {
                        continue;
                    }
                    let after = clients[u].last.get(room).copied().unwrap_or(0);
                    let (msgs, more) = app
                        .history(
                            &Actor::User(user.clone()),
                            *room,
                            page(None, Some(after), Some(200)).unwrap(),
                        )
                        .unwrap();
                    prop_assert!(!more);
                    for m in msgs {
                        clients[u].seen.entry(*room).or_default().push(m.seq);
                        clients[u].last.insert(*room, m.seq);
                    }
                }
            }
            _ => {}
        }
        for c in clients.iter_mut() {
            c.drain();
        }
    }
    for (u, c) in clients.iter().enumerate() {
        for room in &rooms {
            let seen = c.seen.get(room).cloned().unwrap_or_default();
            let want = expected[u].get(room).cloned().unwrap_or_default();
            prop_assert_eq!(&seen, &want, "user {} room {:?}", u, room);
            prop_assert!(seen.windows(2).all(|w| w[0] < w[1]));
        }
    }
    // Seqs per room have no gaps.
    for room in &rooms {
        let (all, _) = app
            .history(
                &Actor::Operator,
                *room,
                page(None, Some(0), Some(200)).unwrap(),
            )
            .unwrap();
        let seqs: Vec<u64> = all.iter().map(|m| m.seq).collect();
        prop_assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn members_see_every_message_once_in_order(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(ops))?;
    }
}

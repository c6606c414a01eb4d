import Logging
import PostgresNIO

/// Listens on a channel for as long as its task runs, on a connection of its own, and hands every
/// payload to `receive`; when the connection is lost (a restarted server), listens again after a
/// pause. Notifications sent meanwhile are lost: every user also polls, so a lost one only delays.
func listenForever(
    client: PostgresClient, channel: String, logger: Logger, receive: @escaping @Sendable (String) -> Void
) async {
    while !Task.isCancelled {
        do {
            try await client.withConnection { connection in
                try await connection.listen(on: channel) { notifications in
                    // Listening now: what finished before this was missed, so everyone re-checks.
                    receive("")
                    for try await notification in notifications { receive(notification.payload) }
                }
            }
        } catch {
            if Task.isCancelled { return }
            logger.debug("listen \(channel) lost, listening again", metadata: ["error": "\(error)"])
        }
        try? await Task.sleep(for: .milliseconds(200))
    }
}

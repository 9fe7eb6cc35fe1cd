// Runs on a supervisor thread, in the same process as the HTTP server.
export default async function sendReceipt({ orderId }, { query, logger }) {
  const { rows } = await query('SELECT item FROM embed_example.orders WHERE id = $1', [orderId]);
  logger.info({ orderId }, 'receipt sent');
  await query('UPDATE embed_example.orders SET receipt_sent_at = now() WHERE id = $1', [orderId]);
  return { orderId, item: rows[0]?.item ?? null };
}

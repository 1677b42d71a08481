"""What the console and the API do to queues and messages: the Queue Viewer's figures, message
search and the administrator's actions (freeze, retry, delete, NDR). Built on the queue core
(``relay.queue``) and the delivery stage; the core imports nothing from here."""

"""The MQTT transport both sides use: one paho-mqtt client wrapper (:mod:`transport.client`),
one epoll loop for many clients (:mod:`transport.loop`) and the broker section of a
configuration (:mod:`transport.config`). It knows topics and payloads only as strings and bytes:
what they mean is :mod:`contract`'s business."""

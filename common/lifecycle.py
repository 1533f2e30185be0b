"""The two lifecycles of SPEC §3, named once: a reservation's statuses and a
delivery's. The reservation and delivery domains move through them, MyPage
shows them, the event schemas and the API's schemas name them. And the kinds
of notice a customer is told of them (notification sends them, the API
lists them).

    reservation: requested ─┬─> confirmed ─> shipped ─> delivered ─> returned
                            └─> waitlisted ─┘
                 requested, waitlisted, confirmed, shipped ─> canceled
    delivery:    preparing ─> shipped ─> delivered;  preparing, shipped ─> canceled
"""
REQUESTED = "requested"
WAITLISTED = "waitlisted"
CONFIRMED = "confirmed"
SHIPPED = "shipped"
DELIVERED = "delivered"
RETURNED = "returned"
CANCELED = "canceled"
PREPARING = "preparing"

# In the order a reservation (a delivery) moves forward; canceled ends either
# from any status before delivered.
RESERVATION_PROGRESS = (REQUESTED, WAITLISTED, CONFIRMED, SHIPPED, DELIVERED, RETURNED)
RESERVATION_STATUSES = RESERVATION_PROGRESS + (CANCELED,)
DELIVERY_PROGRESS = (PREPARING, SHIPPED, DELIVERED)
DELIVERY_STATUSES = DELIVERY_PROGRESS + (CANCELED,)

DUE_SOON = "due_soon"
OVERDUE = "overdue"
NOTICE_KINDS = (CONFIRMED, SHIPPED, DELIVERED, DUE_SOON, OVERDUE, CANCELED)

"""Browser sign-in for operators' people and platform staff: login, logout, password
change and reset (Django's auth views in the admin's look), and which operator a signed-in
user is looking at (`memberships`)."""

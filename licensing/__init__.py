"""Licensing of the Outlook Mail Connector: signed keys, activation, enabled users, the gate."""

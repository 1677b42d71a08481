"""The Internet Mail Wizard: a guided setup that picks a server and one of its
SMTP virtual servers, sending / receiving / both, the accepted domains to receive for, an
outbound connector (all domains or some, by DNS or smart hosts), checks that relay stays
closed, shows a summary of every change, and makes them all in one transaction, audited.

Each step is a form validated against what the steps before it chose; the answers live in the
session (server-side). Finish validates every step again, with the virtual server locked, and
compares the plan with the summary the administrator saw: a change made meanwhile by someone
else stops the wizard instead of being trampled, and nothing is written unless everything is.
"""

from connectors.console.wizard.views import InternetMailWizard, wizard_nodes

__all__ = ["InternetMailWizard", "wizard_nodes"]
